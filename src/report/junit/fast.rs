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

use super::{Flow, Parser, SIMPLE_ATTRS, SimpleAttr, is_xml_space, swar};
use crate::report::Report;

/// See the module docs.
pub(super) fn parse(bytes: &[u8]) -> Option<Report> {
    let b = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let text = std::str::from_utf8(b).ok()?;
    let mut parser = Parser::new();
    // a test case takes some 100-200 bytes; growing the list costs copies
    parser.tests.reserve((b.len() / 160).min(1 << 20));
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
