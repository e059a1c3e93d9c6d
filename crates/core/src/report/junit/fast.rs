//! The in-memory fast path of the JUnit parser.
//!
//! A report held in memory is first tokenised here instead of by quick-xml. The
//! tokenizer follows quick-xml's slice reader step by step for the markup test
//! reports use (elements, attributes, text, character and entity references,
//! CDATA, comments, processing instructions), building the same
//! [`quick_xml::events::Event`]s over borrowed slices, and feeds them to the same
//! [`Parser`]. It gives up (`None`) as soon as it meets anything else: a
//! DOCTYPE, a lone `&`, an unclosed or mismatched tag, a `<?>`, invalid UTF-8,
//! or any error the parser reports. The caller then parses the input again with
//! quick-xml, which gives the same report or the located error. So the fast
//! path never accepts an input quick-xml rejects, and never decides an error
//! message or position itself.
//!
//! Warnings carry positions computed from the byte offset of the event, as
//! `Tracked::describe` does (the UTF-8 byte order mark is not counted).

use quick_xml::events::{BytesCData, BytesEnd, BytesPI, BytesRef, BytesStart, BytesText, Event};

use super::parser::{Flow, Parser};
use super::swar;
use super::xml::{SIMPLE_ATTRS, SimpleAttr, is_xml_space};
use crate::report::Report;

/// See the module docs.
pub(super) fn parse(bytes: &[u8]) -> Option<Report> {
    let b = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let text = std::str::from_utf8(b).ok()?;
    let mut parser = Parser::new();
    // a test case takes some 100-200 bytes; growing the list costs copies
    parser.tests.list.reserve((b.len() / 160).min(1 << 20));
    // names of the open elements, for the end-tag check
    let mut open: Vec<&str> = Vec::new();
    let mut attrs: [SimpleAttr<'_>; SIMPLE_ATTRS] = [("", "", false); SIMPLE_ATTRS];
    let mut pos = 0;
    // `Some(true)`: the parser is done; `None`: give up
    let emit = |parser: &mut Parser, event: Event<'_>, at: usize| -> Option<bool> {
        let position = || describe(b, at);
        match parser.handle(event, &position) {
            Ok(Flow::Continue) => Some(false),
            Ok(Flow::Stop) => Some(true),
            Err(_) => None,
        }
    };
    loop {
        // text, up to markup or a reference
        match next_markup(&b[pos..]) {
            None => {
                if pos < b.len()
                    && emit(
                        &mut parser,
                        Event::Text(BytesText::from_escaped(&text[pos..])),
                        pos,
                    )?
                {
                    break;
                }
                emit(&mut parser, Event::Eof, b.len())?;
                break;
            }
            Some(0) => {}
            // Inside the root element and outside a result element the parser
            // ignores text (see `Parser::text`): no need to hand it over.
            Some(len) if parser.depth > 0 && parser.capture.is_none() => pos += len,
            Some(len) => {
                let event = Event::Text(BytesText::from_escaped(&text[pos..pos + len]));
                if emit(&mut parser, event, pos)? {
                    break;
                }
                pos += len;
            }
        }
        let start = pos;
        if b[pos] == b'&' {
            // `&name;`; a `&` that is not closed by `;` before the next `&` or `<`
            // is text for quick-xml (with `allow_dangling_amp`): left to it
            match memchr::memchr3(b';', b'&', b'<', &b[pos + 1..]) {
                Some(len) if b[pos + 1 + len] == b';' => {
                    let name = &text[pos + 1..pos + 1 + len];
                    pos += len + 2;
                    if emit(&mut parser, Event::GeneralRef(BytesRef::new(name)), start)? {
                        break;
                    }
                }
                _ => return None,
            }
            continue;
        }
        let event = match b.get(pos + 1)? {
            b'!' if b[pos..].starts_with(b"<!--") => {
                // the first `-->` whose `>` is at least 6 bytes after `<`
                let end = pos + 4 + memchr::memmem::find(&b[pos + 4..], b"-->")?;
                let comment = &text[pos + 4..end];
                pos = end + 3;
                Event::Comment(BytesText::from_escaped(comment))
            }
            b'!' if b[pos..].starts_with(b"<![CDATA[") => {
                let end = pos + 9 + memchr::memmem::find(&b[pos + 9..], b"]]>")?;
                let data = &text[pos + 9..end];
                pos = end + 3;
                Event::CData(BytesCData::new(data))
            }
            // DOCTYPE or not well-formed
            b'!' => return None,
            b'?' => {
                // the first `>` after a `?`; `<?>` is an error
                let question = pos + 1 + memchr::memmem::find(&b[pos + 1..], b"?>")?;
                if question == pos + 1 {
                    return None;
                }
                let content = &text[pos + 2..question];
                pos = question + 2;
                // declarations and processing instructions mean nothing to the parser
                Event::PI(BytesPI::new(content))
            }
            b'/' => {
                // the usual `</name>` of the innermost element, else the general scan
                let gt = match open.last() {
                    Some(name)
                        if b[pos + 2..].starts_with(name.as_bytes())
                            && b.get(pos + 2 + name.len()) == Some(&b'>')
                            && !name.bytes().any(|c| c == b'"' || c == b'\'') =>
                    {
                        pos + 2 + name.len()
                    }
                    _ => tag_end(b, pos)?,
                };
                let name = text[pos + 2..gt].trim_end_matches([' ', '\t', '\r', '\n']);
                if open.pop() != Some(name) {
                    return None;
                }
                pos = gt + 1;
                Event::End(BytesEnd::new(name))
            }
            b't' if parser.simple_testcase_allowed() => {
                if let Some(end) = simple_testcase(text, pos, &mut attrs) {
                    let position = || describe(b, start);
                    parser.simple_testcase(&attrs[..end.attributes], &position);
                    pos = end.after;
                    continue;
                }
                start_tag(text, &mut pos, &mut open)?
            }
            _ => start_tag(text, &mut pos, &mut open)?,
        };
        if emit(&mut parser, event, start)? {
            break;
        }
    }
    Some(parser.finish())
}

/// The `Start` or `Empty` event of the tag at `text[*pos]` (`<`), as quick-xml
/// builds it; `*pos` moves past the tag, a `Start` pushes its name on `open`.
fn start_tag<'t>(text: &'t str, pos: &mut usize, open: &mut Vec<&'t str>) -> Option<Event<'t>> {
    let gt = tag_end(text.as_bytes(), *pos)?;
    let inner = &text[*pos + 1..gt];
    *pos = gt + 1;
    Some(match inner.strip_suffix('/') {
        Some(content) => Event::Empty(BytesStart::from_content(content, name_len(content))),
        None => {
            let len = name_len(inner);
            open.push(&inner[..len]);
            Event::Start(BytesStart::from_content(inner, len))
        }
    })
}

/// Where a `<testcase>` read by [`simple_testcase`] ends.
struct SimpleEnd {
    /// number of attributes stored
    attributes: usize,
    /// offset just after the element
    after: usize,
}

/// A JUnit test case in the simplest form, at `text[pos]` (`<`):
/// `<testcase` + `key="value"`s (see `simple_attributes`) + `/>`, or + `>` + text
/// without `<` or `&` + `</testcase>`. Its attributes go to `out`. `None` for
/// anything else (read with the events instead).
fn simple_testcase<'t>(
    text: &'t str,
    pos: usize,
    out: &mut [SimpleAttr<'t>; SIMPLE_ATTRS],
) -> Option<SimpleEnd> {
    const NAME: &[u8] = b"<testcase";
    const CLOSE: &[u8] = b"</testcase>";
    let b = text.as_bytes();
    if !b[pos..].starts_with(NAME) {
        return None;
    }
    let (attributes, tag_end, empty) = simple_tag(text, pos + NAME.len(), out)?;
    if empty {
        return Some(SimpleEnd {
            attributes,
            after: tag_end,
        });
    }
    let close = tag_end + next_markup(&b[tag_end..])?;
    if !b[close..].starts_with(CLOSE) {
        return None;
    }
    Some(SimpleEnd {
        attributes,
        after: close + CLOSE.len(),
    })
}

/// Reads the attributes of a tag from `i` (just after its name) in the form
/// `simple_attributes` accepts, up to `>` or `/>`: the number of attributes, the
/// offset after the tag and whether it was `/>`. The attributes are those
/// quick-xml's reader and attribute parser give for the tag. `None` for
/// anything else.
fn simple_tag<'t>(
    text: &'t str,
    mut i: usize,
    out: &mut [SimpleAttr<'t>; SIMPLE_ATTRS],
) -> Option<(usize, usize, bool)> {
    /// 1: XML white space, 2: `=`, 3: a quote, 4: `>` or `/`, 0: anything else
    const CLASS: [u8; 256] = {
        let mut t = [0u8; 256];
        t[b' ' as usize] = 1;
        t[b'\t' as usize] = 1;
        t[b'\r' as usize] = 1;
        t[b'\n' as usize] = 1;
        t[b'=' as usize] = 2;
        t[b'"' as usize] = 3;
        t[b'\'' as usize] = 3;
        t[b'>' as usize] = 4;
        t[b'/' as usize] = 4;
        t
    };
    let b = text.as_bytes();
    let class = |i: usize| b.get(i).map_or(u8::MAX, |&c| CLASS[usize::from(c)]);
    let mut n = 0;
    loop {
        let space = i;
        while class(i) == 1 {
            i += 1;
        }
        match b.get(i)? {
            b'>' => return Some((n, i + 1, false)),
            b'/' if b.get(i + 1) == Some(&b'>') => return Some((n, i + 2, true)),
            _ => {}
        }
        if i == space || n == SIMPLE_ATTRS {
            return None;
        }
        let key_start = i;
        while class(i) == 0 {
            i += 1;
        }
        if i == key_start || class(i) != 2 {
            return None;
        }
        let key = &text[key_start..i];
        i += 1;
        let quote = *b.get(i)?;
        if quote != b'"' && quote != b'\'' {
            return None;
        }
        let (len, special) = swar::until_quote(&b[i + 1..], quote)?;
        let value = &text[i + 1..i + 1 + len];
        i += len + 2;
        if out[..n]
            .iter()
            .any(|(k, _, _)| k.len() == key.len() && *k == key)
        {
            return None;
        }
        out[n] = (key, value, special);
        n += 1;
    }
}

/// Offset of the first `<` or `&`: a short look first (usually the white space
/// between two tags), then a SIMD search.
fn next_markup(b: &[u8]) -> Option<usize> {
    let head = &b[..b.len().min(16)];
    match head.iter().position(|&c| c == b'<' || c == b'&') {
        Some(i) => Some(i),
        None => memchr::memchr2(b'<', b'&', &b[head.len()..]).map(|i| head.len() + i),
    }
}

/// The `>` that ends the tag starting at `b[start]` (`<`), outside quotes (as
/// quick-xml's `ElementParser`).
fn tag_end(b: &[u8], start: usize) -> Option<usize> {
    let mut i = start;
    loop {
        i += swar::find3(&b[i..], b'>', b'"', b'\'')?;
        if b[i] == b'>' {
            return Some(i);
        }
        i += 1 + swar::find(&b[i + 1..], b[i])? + 1;
    }
}

/// Length of the element name at the start of a tag's content: up to the first
/// white space.
fn name_len(content: &str) -> usize {
    content
        .bytes()
        .position(is_xml_space)
        .unwrap_or(content.len())
}

/// `"line L, column C"` of a byte offset (column in bytes, 1-based).
fn describe(b: &[u8], at: usize) -> String {
    let before = &b[..at.min(b.len())];
    let line = memchr::memchr_iter(b'\n', before).count() + 1;
    let column = match memchr::memrchr(b'\n', before) {
        Some(nl) => at - nl,
        None => at + 1,
    };
    format!("line {line}, column {column}")
}

#[cfg(test)]
mod tests {
    use crate::report::junit::parse_junit;
    use crate::report::junit::tests::fast_and_reader;

    fn junit_fixtures() -> Vec<std::path::PathBuf> {
        fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
            for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    walk(&path, out);
                } else if path.extension().is_some_and(|e| e == "xml") {
                    out.push(path);
                }
            }
        }
        let mut out = Vec::new();
        walk(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/junit"),
            &mut out,
        );
        out.sort();
        out
    }

    #[test]
    fn the_fast_path_agrees_with_quick_xml_on_every_fixture() {
        let files = junit_fixtures();
        assert!(files.len() > 20, "{files:?}");
        let mut fast = 0;
        for path in &files {
            let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
            let (a, b) = fast_and_reader(&bytes);
            assert_eq!(a, b, "{path:?}");
            fast += usize::from(super::parse(&bytes).is_some());
        }
        // all but the corrupt fixtures and those with a DOCTYPE or a lone `&`
        assert!(fast * 10 >= files.len() * 8, "{fast} of {}", files.len());
    }

    #[test]
    fn the_fast_path_agrees_with_quick_xml_on_damaged_and_unusual_input() {
        const SNIPPETS: &[&str] = &[
            "<!-- c -->",
            "<!---->",
            "<!-->",
            "<![CDATA[x<y&z]]>",
            "<?pi x?>",
            "<?>",
            "<?xml version=\"1.0\"?>",
            "&amp;",
            "&bogus;",
            "&#x41;",
            "&#xZZ;",
            "& ",
            "&",
            "<",
            ">",
            "\"",
            "'",
            "/",
            "=",
            "</testcase>",
            "</testsuite >",
            "<testcase name=\"n\"/>",
            "<testcase name=\"n\" />",
            "<testcase name='n' time='1,5'>\n</testcase>",
            "<testcase name=\"n\" >x</testcase>",
            "<testcase name=\"n\">&amp;</testcase>",
            "<testcase name=\"a&lt;b&zz;\" classname=\"c\" time=\"0.25\"/>",
            "<testcase name=\"t\tab\nnl\"/>",
            "<testcase name = \"spaced\"/>",
            "<testcase name=\"dup\" name=\"dup\"/>",
            "<testcase name=unquoted/>",
            "<testcase x:name=\"ns\"/>",
            "<testcase name=\"a>b\"/>",
            "<testcase name=\"c\" classname=\"k\"><failure/></testcase><testcase name=\"c\" classname=\"k\"/>",
            "<testcase name=\"r\"><failure message=\"m\">body &lt;1&gt;</failure></testcase>",
            "<testcase name=\"s\" status=\"skipped\"/>",
            "<testcasex name=\"z\"/>",
            "<testcase/>",
            "<testcase><testcase name=\"nested\"/></testcase>",
            "<system-out>out &amp; about</system-out>",
            "<!DOCTYPE x>",
            "\u{feff}",
            "\r\n",
            "\t",
            "é",
        ];
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut next = |n: usize| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            (rng % n.max(1) as u64) as usize
        };
        let bases: Vec<Vec<u8>> = junit_fixtures()
            .iter()
            .filter_map(|p| std::fs::read(p).ok())
            .filter(|b| b.len() < 40_000)
            .collect();
        assert!(bases.len() > 10);
        for round in 0..1500 {
            let mut doc = bases[next(bases.len())].clone();
            for _ in 0..1 + next(3) {
                let at = next(doc.len() + 1);
                match next(6) {
                    0 => doc.truncate(at),
                    1 => {
                        let end = (at + next(40)).min(doc.len());
                        doc.drain(at..end);
                    }
                    2 => doc.insert(at, 0xff),
                    _ => {
                        let snippet = SNIPPETS[next(SNIPPETS.len())].as_bytes();
                        doc.splice(at..at, snippet.iter().copied());
                    }
                }
            }
            let (a, b) = fast_and_reader(&doc);
            assert_eq!(a, b, "round {round}: {}", String::from_utf8_lossy(&doc));
        }
    }

    #[test]
    fn well_formed_reports_take_the_fast_path() {
        for xml in [
            "<testsuites><testsuite name=\"s\"><testcase name=\"a\" time=\"1\"/></testsuite></testsuites>",
            "\u{feff}<?xml version=\"1.0\"?>\n<!-- c --><testsuite><testcase name='a'>\n</testcase></testsuite>\n",
            "<testsuite><testcase name=\"a\"><failure><![CDATA[x < y]]> &amp; more</failure></testcase></testsuite>",
            "<test-run><test-suite name=\"s\"><test-case fullname=\"a\" result=\"Passed\"/></test-suite></test-run>",
        ] {
            let fast = super::parse(xml.as_bytes());
            assert!(fast.is_some(), "{xml}");
            assert_eq!(fast, parse_junit("t.xml", xml.as_bytes()).ok(), "{xml}");
        }
        for xml in [
            "<!DOCTYPE t><testsuite/>",
            "<testsuite><testcase name=\"a\"><failure>a & b</failure></testcase></testsuite>",
            "<testsuite></testsuites>",
            "<testsuite>",
        ] {
            assert!(super::parse(xml.as_bytes()).is_none(), "{xml}");
        }
    }
}
