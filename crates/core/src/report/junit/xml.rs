//! XML details the parser needs beyond quick-xml's events: qualified names,
//! attributes (split without quick-xml in the usual form), attribute value
//! normalisation, the predefined entities and character references.

use std::borrow::Cow;

use quick_xml::events::BytesStart;

use super::parser::Ctx;
use super::swar;

pub(super) fn local_name<'a>(e: &'a BytesStart<'_>) -> &'a str {
    after_colon(e.name().0)
}

/// The local part of a qualified name (after the last `:`).
pub(super) fn after_colon(name: &str) -> &str {
    match name.bytes().rposition(|b| b == b':') {
        Some(i) => &name[i + 1..],
        None => name,
    }
}

/// Calls `f(local_key, unescaped_value)` for each attribute.
///
/// Tags in the usual form (`key="value"` or `key='value'` separated by white
/// space, no duplicate keys) are split here; anything else goes through
/// quick-xml's attribute parser, which reports the problem.
pub(super) fn for_each_attr<'e>(
    e: &'e BytesStart<'_>,
    ctx: &mut Ctx<'_>,
    mut f: impl FnMut(&str, Cow<'e, str>),
) -> Result<(), String> {
    let mut attrs = [("", "", false); SIMPLE_ATTRS];
    if let Some(n) = simple_attributes(e.attributes_raw(), &mut attrs) {
        for &(key, raw, special) in &attrs[..n] {
            f(
                after_colon(key),
                attr_value(raw, special, ctx.unknown_entity),
            );
        }
        return Ok(());
    }
    for attr in e.attributes() {
        let attr = attr.map_err(|err| format!("invalid attribute: {err}"))?;
        f(
            after_colon(attr.key.0),
            Cow::Owned(unescape_attr(&attr.value, ctx.unknown_entity)),
        );
    }
    Ok(())
}

/// The value of an attribute split by [`simple_attributes`].
pub(super) fn attr_value<'r>(
    raw: &'r str,
    special: bool,
    unknown_entity: &mut bool,
) -> Cow<'r, str> {
    if special {
        Cow::Owned(unescape_attr(raw, unknown_entity))
    } else {
        Cow::Borrowed(raw)
    }
}

/// Attributes [`simple_attributes`] splits without quick-xml.
pub(super) const SIMPLE_ATTRS: usize = 16;

/// One attribute split by [`simple_attributes`]: key, raw value, and whether the
/// value has a byte [`unescape_attr`] may change.
pub(super) type SimpleAttr<'r> = (&'r str, &'r str, bool);

/// Splits `raw` (the tag after its name) into attributes when it is a sequence of
/// `key="value"` / `key='value'` with white space before each key, at most
/// [`SIMPLE_ATTRS`] of them, no key twice. quick-xml's attribute parser gives the
/// same pairs for such input. `None` for anything else.
fn simple_attributes<'r>(raw: &'r str, out: &mut [SimpleAttr<'r>; SIMPLE_ATTRS]) -> Option<usize> {
    /// 1: XML white space, 2: `=`, 3: a quote, 0: anything else
    const CLASS: [u8; 256] = {
        let mut t = [0u8; 256];
        t[b' ' as usize] = 1;
        t[b'\t' as usize] = 1;
        t[b'\r' as usize] = 1;
        t[b'\n' as usize] = 1;
        t[b'=' as usize] = 2;
        t[b'"' as usize] = 3;
        t[b'\'' as usize] = 3;
        t
    };
    let b = raw.as_bytes();
    let class = |i: usize| b.get(i).map_or(u8::MAX, |&c| CLASS[usize::from(c)]);
    let mut n = 0;
    let mut i = 0;
    loop {
        let start = i;
        while class(i) == 1 {
            i += 1;
        }
        if i == b.len() {
            return Some(n);
        }
        if i == start || n == SIMPLE_ATTRS {
            return None;
        }
        let key_start = i;
        while class(i) == 0 {
            i += 1;
        }
        if i == key_start || class(i) != 2 {
            return None;
        }
        let key = &raw[key_start..i];
        i += 1;
        let quote = *b.get(i)?;
        if quote != b'"' && quote != b'\'' {
            return None;
        }
        let (len, special) = swar::until_quote(&b[i + 1..], quote)?;
        let value = &raw[i + 1..i + 1 + len];
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

/// White space as XML (and quick-xml) define it.
pub(super) fn is_xml_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

pub(super) fn predefined_entity(name: &str) -> Option<char> {
    match name {
        "lt" => Some('<'),
        "gt" => Some('>'),
        "amp" => Some('&'),
        "apos" => Some('\''),
        "quot" => Some('"'),
        _ => None,
    }
}

fn char_ref(body: &str) -> Option<char> {
    let code = match body.strip_prefix('x') {
        Some(hex) if !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit()) => {
            u32::from_str_radix(hex, 16).ok()?
        }
        Some(_) => return None,
        None if !body.is_empty() && body.bytes().all(|b| b.is_ascii_digit()) => {
            body.parse::<u32>().ok()?
        }
        None => return None,
    };
    char::from_u32(code).filter(|&c| c != '\0')
}

/// Attribute value normalisation and unescaping: literal tabs/newlines become
/// spaces (XML 1.0 §3.3.3), predefined entities and character references are
/// decoded, anything else (unknown entities, a lone `&`) is kept verbatim.
fn unescape_attr(raw: &str, unknown_entity: &mut bool) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    let mut previous_cr = false;
    while let Some(c) = rest.chars().next() {
        match c {
            '&' => {
                previous_cr = false;
                let candidate = rest.get(1..).unwrap_or("");
                let end = candidate.char_indices().take(33).find(|(_, ch)| *ch == ';');
                if let Some((semi, _)) = end {
                    let name = &candidate[..semi];
                    let decoded = match name.strip_prefix('#') {
                        Some(num) => char_ref(num),
                        None => predefined_entity(name),
                    };
                    match decoded {
                        Some(ch) => out.push(ch),
                        None => {
                            if !name.starts_with('#') {
                                *unknown_entity = true;
                            }
                            out.push('&');
                            out.push_str(name);
                            out.push(';');
                        }
                    }
                    rest = candidate.get(semi + 1..).unwrap_or("");
                    continue;
                }
                out.push('&');
            }
            '\r' => {
                out.push(' ');
                previous_cr = true;
                rest = &rest[1..];
                continue;
            }
            '\n' => {
                if !previous_cr {
                    out.push(' ');
                }
            }
            '\t' => out.push(' '),
            _ => {
                // copy up to the next character that needs work
                let run = rest
                    .bytes()
                    .position(|b| matches!(b, b'&' | b'\r' | b'\n' | b'\t'))
                    .unwrap_or(rest.len());
                out.push_str(&rest[..run]);
                previous_cr = false;
                rest = &rest[run..];
                continue;
            }
        }
        previous_cr = false;
        rest = &rest[c.len_utf8()..];
    }
    out
}
