//! The rendered XML of a Windows event (`<Event><System>...</System><EventData>...`), read with
//! a real XML parser (quick-xml), so that entities, either quote style, namespaces and any
//! Unicode are read as Windows wrote them and no input can panic.
//!
//! The schema is Microsoft's event schema (`http://schemas.microsoft.com/win/2004/08/events/event`):
//! `System` holds `Provider/@Name`, `EventID`, `TimeCreated/@SystemTime` (UTC, 100 ns),
//! `EventRecordID`, `Channel`, `Computer`, `Keywords`; the event's data is either
//! `EventData/Data[@Name]` or one element under `UserData` whose children are the fields
//! (event 1102's `LogFileCleared/SubjectUserName`...).

use quick_xml::events::{BytesStart, Event};
use quick_xml::{Reader, XmlVersion};

/// Deepest element nesting read; a Windows event is four levels deep.
pub const MAX_DEPTH: usize = 32;

/// The fields of one rendered event. Values are the element text or attribute value, trimmed,
/// entities resolved.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct XmlEvent {
    /// `System/Provider/@Name`.
    pub provider: Option<String>,
    /// `System/EventID`.
    pub event_id: Option<String>,
    /// `System/TimeCreated/@SystemTime`.
    pub system_time: Option<String>,
    /// `System/EventRecordID`.
    pub record_id: Option<String>,
    /// `System/Channel`.
    pub channel: Option<String>,
    /// `System/Computer`.
    pub computer: Option<String>,
    /// `System/Keywords` (`0x8020000000000000`).
    pub keywords: Option<String>,
    /// The data fields: `EventData/Data` by `Name` (an unnamed one as `param1`, `param2`...,
    /// as Winlogbeat names them), else the children of `UserData`'s element by their names.
    pub data: Vec<(String, String)>,
}

/// Parses a rendered event (or its `<System>` element alone, as Fluent Bit sends it).
///
/// Errors: the XML parser's message and position, or nesting deeper than [`MAX_DEPTH`].
pub fn parse(xml: &str) -> Result<XmlEvent, String> {
    let mut reader = Reader::from_str(xml);
    let mut ev = XmlEvent::default();
    let mut path: Vec<String> = Vec::new();
    // The `Name` of the open `EventData/Data`, and the text of the open element.
    let mut data_name: Option<String> = None;
    let mut text = String::new();
    let mut unnamed = 0;
    loop {
        let event = reader.read_event().map_err(|e| {
            format!(
                "not well-formed XML at byte {}: {e}",
                reader.error_position()
            )
        })?;
        match event {
            Event::Start(e) => {
                if path.len() == MAX_DEPTH {
                    return Err(format!("elements nested deeper than {MAX_DEPTH}"));
                }
                let name = local(&e);
                attributes(&mut ev, &path, &name, &e);
                if name == "Data" && parent(&path) == Some("EventData") {
                    data_name = attr(&e, "Name");
                }
                path.push(name);
                text.clear();
            }
            Event::Empty(e) => {
                let name = local(&e);
                attributes(&mut ev, &path, &name, &e);
                // `<Data Name='X'/>`: the field is there and empty.
                if name == "Data"
                    && parent(&path) == Some("EventData")
                    && let Some(n) = attr(&e, "Name")
                {
                    ev.data.push((n, String::new()));
                }
            }
            Event::Text(t) => text.push_str(&t.xml10_content()),
            Event::CData(t) => text.push_str(&t),
            Event::GeneralRef(r) => {
                if let Ok(Some(c)) = r.resolve_char_ref() {
                    text.push(c);
                } else if let Some(s) = quick_xml::escape::resolve_predefined_entity(&r) {
                    text.push_str(s);
                }
            }
            Event::End(_) => {
                let Some(name) = path.pop() else { continue };
                let value = text.trim().to_owned();
                text.clear();
                close(&mut ev, &path, &name, value, &mut data_name, &mut unnamed);
            }
            Event::Eof => break,
            _ => {}
        }
    }
    Ok(ev)
}

fn local(e: &BytesStart<'_>) -> String {
    e.local_name().as_ref().to_owned()
}

fn parent(path: &[String]) -> Option<&str> {
    path.last().map(String::as_str)
}

fn attr(e: &BytesStart<'_>, name: &str) -> Option<String> {
    e.attributes()
        .flatten()
        .find(|a| a.key.local_name().as_ref() == name)
        .and_then(|a| {
            a.normalized_value(XmlVersion::Implicit1_0)
                .ok()
                .map(|v| v.trim().to_owned())
        })
}

/// The `System` fields kept in attributes.
fn attributes(ev: &mut XmlEvent, path: &[String], name: &str, e: &BytesStart<'_>) {
    if parent(path) != Some("System") {
        return;
    }
    match name {
        "Provider" => ev.provider = attr(e, "Name").filter(|v| !v.is_empty()),
        "TimeCreated" => ev.system_time = attr(e, "SystemTime").filter(|v| !v.is_empty()),
        _ => {}
    }
}

/// An element closed: `path` is its ancestors, `value` its text.
fn close(
    ev: &mut XmlEvent,
    path: &[String],
    name: &str,
    value: String,
    data_name: &mut Option<String>,
    unnamed: &mut usize,
) {
    let some = || Some(value.clone()).filter(|v| !v.is_empty());
    match parent(path) {
        Some("System") => match name {
            "EventID" => ev.event_id = some(),
            "EventRecordID" => ev.record_id = some(),
            "Channel" => ev.channel = some(),
            "Computer" => ev.computer = some(),
            "Keywords" => ev.keywords = some(),
            _ => {}
        },
        Some("EventData") if name == "Data" => {
            let field = data_name.take().unwrap_or_else(|| {
                *unnamed += 1;
                format!("param{unnamed}")
            });
            ev.data.push((field, value));
        }
        // `UserData/<Element>/<Field>`: the element names the event's data structure.
        Some(_) if path.len() >= 2 && path[path.len() - 2] == "UserData" => {
            ev.data.push((name.to_owned(), value));
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_event_data_and_user_data() {
        let xml = "<Event xmlns='http://schemas.microsoft.com/win/2004/08/events/event'><System><Provider Name='Microsoft-Windows-Eventlog' Guid='{fc65ddd8-d6ef-4962-83d5-6e5cfe9ce148}'/><EventID>1102</EventID><Keywords>0x4020000000000000</Keywords><TimeCreated SystemTime='2026-11-21T10:06:01.3311020Z'/><EventRecordID>99120</EventRecordID><Channel>Security</Channel><Computer>DC42.corp.example</Computer><Security/></System><UserData><LogFileCleared xmlns='http://manifests.microsoft.com/win/2004/08/windows/eventlog'><SubjectUserSid>S-1-5-21-1-500</SubjectUserSid><SubjectUserName>mallory.admin</SubjectUserName></LogFileCleared></UserData></Event>";
        let e = parse(xml).unwrap();
        assert_eq!(e.provider.as_deref(), Some("Microsoft-Windows-Eventlog"));
        assert_eq!(e.event_id.as_deref(), Some("1102"));
        assert_eq!(
            e.system_time.as_deref(),
            Some("2026-11-21T10:06:01.3311020Z")
        );
        assert_eq!(e.record_id.as_deref(), Some("99120"));
        assert_eq!(
            (e.channel.as_deref(), e.computer.as_deref()),
            (Some("Security"), Some("DC42.corp.example"))
        );
        assert_eq!(e.keywords.as_deref(), Some("0x4020000000000000"));
        assert_eq!(
            e.data,
            vec![
                ("SubjectUserSid".into(), "S-1-5-21-1-500".into()),
                ("SubjectUserName".into(), "mallory.admin".into())
            ]
        );
    }

    #[test]
    fn entities_quotes_and_unnamed_data() {
        let xml = r#"<Event><System><EventID Qualifiers="16384">7036</EventID></System><EventData><Data Name="TargetUserName">carol &amp; co&#x21;</Data><Data Name='Empty'/><Data>Windows Update</Data><Data>stopped</Data></EventData></Event>"#;
        let e = parse(xml).unwrap();
        assert_eq!(e.event_id.as_deref(), Some("7036"));
        assert_eq!(
            e.data,
            vec![
                ("TargetUserName".into(), "carol & co!".into()),
                ("Empty".into(), String::new()),
                ("param1".into(), "Windows Update".into()),
                ("param2".into(), "stopped".into())
            ]
        );
    }

    #[test]
    fn hostile_input_is_an_error_not_a_panic() {
        for xml in [
            "<Event><System><EventID>4624</EventID><TimeCreated SystemTime=é/>",
            "<Event><System><TimeCreated SystemTime='é",
            "<<<>>>",
            "<Event>é</Evént>",
            "",
        ] {
            let _ = parse(xml);
        }
        let deep = "<a>".repeat(100);
        assert!(parse(&deep).unwrap_err().contains("deeper"));
    }
}
