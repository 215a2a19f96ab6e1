//! The text the generator puts in each event, and a parser for the frames
//! viewers receive that never builds a JSON tree for a room event: at half a
//! million frames per second on one core, the parse must stay a few scans.
//!
//! Event text: `LT <run> <lane> <seq> <sender> <scheduled_us> xxxx…`, lane
//! `h` (host) or `c` (chat), padded with `x` to the configured length;
//! `seq` counts the lane's events, `sender` is the socket that sent it.
//! A private notice's `data.text` is `LT <run> n <k> <viewer> <scheduled_us> xxxx…`:
//! the k-th notice for viewer number `viewer`. Only ASCII letters, digits and spaces, so
//! the server's JSON encoding leaves it unchanged and the receiver finds it
//! verbatim in the frame.

use memchr::memmem::Finder;

/// Which lane an event of ours travelled in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    Host,
    Chat,
}

/// An event's text.
pub fn event_text(run: &str, lane: Lane, seq: u64, sender: u32, scheduled_us: u64, len: usize) -> String {
    let lane = match lane {
        Lane::Host => 'h',
        Lane::Chat => 'c',
    };
    pad(format!("LT {run} {lane} {seq} {sender} {scheduled_us} "), len)
}

/// A private notice's text: the `k`-th notice for viewer number `viewer`.
pub fn notice_text(run: &str, k: u64, viewer: u64, scheduled_us: u64, len: usize) -> String {
    pad(format!("LT {run} n {k} {viewer} {scheduled_us} "), len)
}

fn pad(mut text: String, len: usize) -> String {
    // The server trims text, so the padding is never spaces.
    text.push('x');
    while text.len() < len {
        text.push('x');
    }
    text
}

/// What a received frame is, as far as the measurement cares.
#[derive(Debug, PartialEq, Eq)]
pub enum Received<'a> {
    /// A room event carrying one of our marks.
    Marked {
        offset: u64,
        lane: Lane,
        seq: u64,
        sender: u32,
        scheduled_us: u64,
    },
    /// Another room event (viewer counts, likes, presence, foreign runs).
    Other { offset: u64 },
    /// A private notice carrying one of our marks: the `k`-th for viewer `viewer`.
    Notice { k: u64, viewer: u64, scheduled_us: u64 },
    /// A frame that is not a room event: welcome, reset, resumed, ack, error.
    Control(&'a [u8]),
    /// A room event whose header could not be read.
    Garbled,
}

/// Reusable searchers (building a `Finder` costs more than using one).
pub struct Parser {
    run_mark: Vec<u8>,
    text: Finder<'static>,
    kind: Finder<'static>,
}

impl Parser {
    pub fn new(run: &str) -> Self {
        Parser {
            run_mark: format!("LT {run} ").into_bytes(),
            text: Finder::new(b"\"text\":\"").into_owned(),
            kind: Finder::new(b"\"type\":\"").into_owned(),
        }
    }

    pub fn parse<'a>(&self, frame: &'a [u8]) -> Received<'a> {
        const OFFSET: &[u8] = b"{\"offset\":";
        const NOTICE: &[u8] = b"{\"type\":\"notice\",";
        let Some(rest) = frame.strip_prefix(OFFSET) else {
            if frame.starts_with(NOTICE) {
                if let Some(notice) = self.notice(frame) {
                    return notice;
                }
            }
            return Received::Control(frame);
        };
        let Some((offset, _)) = leading_number(rest) else {
            return Received::Garbled;
        };
        let Some(at) = self.kind.find(rest) else {
            return Received::Garbled;
        };
        let kind_start = &rest[at + 8..];
        let lane = if kind_start.starts_with(b"host.announcement\"") {
            Lane::Host
        } else if kind_start.starts_with(b"chat\"") {
            Lane::Chat
        } else {
            return Received::Other { offset };
        };
        let Some(at) = self.text.find(kind_start) else {
            return Received::Other { offset };
        };
        let Some(mark) = kind_start[at + 8..].strip_prefix(self.run_mark.as_slice()) else {
            return Received::Other { offset };
        };
        let fields = match (lane, mark) {
            (Lane::Host, [b'h', b' ', fields @ ..]) | (Lane::Chat, [b'c', b' ', fields @ ..]) => fields,
            _ => return Received::Other { offset },
        };
        let parsed = leading_number(fields).and_then(|(seq, r)| {
            leading_number(r)
                .and_then(|(sender, r)| leading_number(r).map(|(scheduled, _)| (seq, sender, scheduled)))
        });
        match parsed {
            Some((seq, sender, scheduled_us)) => Received::Marked {
                offset,
                lane,
                seq,
                sender: u32::try_from(sender).unwrap_or(u32::MAX),
                scheduled_us,
            },
            None => Received::Other { offset },
        }
    }
}

impl Parser {
    /// A notice frame's mark (its `data.text`), if it is one of ours.
    fn notice<'a>(&self, frame: &'a [u8]) -> Option<Received<'a>> {
        let at = self.text.find(frame)?;
        let fields = frame[at + 8..]
            .strip_prefix(self.run_mark.as_slice())?
            .strip_prefix(b"n ")?;
        let (k, r) = leading_number(fields)?;
        let (viewer, r) = leading_number(r)?;
        let (scheduled_us, _) = leading_number(r)?;
        Some(Received::Notice {
            k,
            viewer,
            scheduled_us,
        })
    }
}

/// Reads decimal digits, then skips one separator; `None` without digits.
fn leading_number(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let digits = bytes.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > 19 {
        return None;
    }
    let mut value: u64 = 0;
    for &b in &bytes[..digits] {
        value = value * 10 + u64::from(b - b'0');
    }
    Some((value, bytes.get(digits + 1..).unwrap_or(&[])))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(offset: u64, kind: &str, from: Option<&str>, text: &str) -> String {
        let from = from.map(|f| format!("\"from\":\"{f}\",")).unwrap_or_default();
        format!(
            "{{\"offset\":{offset},\"epoch\":\"e1x\",\"type\":\"{kind}\",{from}\"ts\":1700000000000,\
             \"data\":{{\"text\":\"{text}\"}}}}"
        )
    }

    #[test]
    fn texts_have_the_requested_length_and_no_trailing_space() {
        let text = event_text("r1", Lane::Host, 7, 0, 1_700_000_000_000_000, 100);
        assert_eq!(text.len(), 100);
        assert!(text.ends_with('x'));
        let long = event_text("r1", Lane::Chat, 7, 3, 1_700_000_000_000_000, 10);
        assert!(long.len() > 10 && long.ends_with('x'));
    }

    #[test]
    fn host_and_chat_marks_are_read_back() {
        let parser = Parser::new("r1");
        let host = frame(
            42,
            "host.announcement",
            Some("agency"),
            &event_text("r1", Lane::Host, 9, 2, 123_456, 100),
        );
        assert_eq!(
            parser.parse(host.as_bytes()),
            Received::Marked {
                offset: 42,
                lane: Lane::Host,
                seq: 9,
                sender: 2,
                scheduled_us: 123_456
            }
        );
        let chat = frame(
            43,
            "chat",
            Some("u1"),
            &event_text("r1", Lane::Chat, 10, 4, 999, 100),
        );
        assert_eq!(
            parser.parse(chat.as_bytes()),
            Received::Marked {
                offset: 43,
                lane: Lane::Chat,
                seq: 10,
                sender: 4,
                scheduled_us: 999
            }
        );
    }

    #[test]
    fn notice_marks_are_read_back_and_other_notices_are_control_frames() {
        let parser = Parser::new("r1");
        let text = notice_text("r1", 3, 4021, 777, 60);
        let frame = format!(
            "{{\"type\":\"notice\",\"id\":9,\"kind\":\"lt.notice\",\"user\":\"ltr1v4021\",\
             \"session_id\":null,\"created_at\":\"x\",\"expires_at\":\"y\",\"data\":{{\"text\":\"{text}\"}}}}"
        );
        assert_eq!(
            parser.parse(frame.as_bytes()),
            Received::Notice {
                k: 3,
                viewer: 4021,
                scheduled_us: 777
            }
        );
        let paid = br#"{"type":"notice","id":1,"kind":"order.paid","data":{"order_id":"o"}}"#;
        assert!(matches!(parser.parse(paid), Received::Control(_)));
        let foreign = frame.replace("LT r1 ", "LT r2 ");
        assert!(matches!(parser.parse(foreign.as_bytes()), Received::Control(_)));
    }

    #[test]
    fn foreign_runs_other_events_and_control_frames_are_told_apart() {
        let parser = Parser::new("r1");
        let foreign = frame(
            5,
            "host.announcement",
            None,
            &event_text("r2", Lane::Host, 1, 0, 2, 50),
        );
        assert_eq!(parser.parse(foreign.as_bytes()), Received::Other { offset: 5 });
        let viewers = "{\"offset\":6,\"epoch\":\"e\",\"type\":\"viewers\",\"ts\":1,\"data\":{\"count\":3}}";
        assert_eq!(parser.parse(viewers.as_bytes()), Received::Other { offset: 6 });
        let ack = br#"{"type":"ack","id":"h1","data":{"offset":3}}"#;
        assert!(matches!(parser.parse(ack), Received::Control(_)));
        assert_eq!(parser.parse(b"{\"offset\":x"), Received::Garbled);
        let user_text = frame(7, "chat", Some("u"), "LT r1 c notanumber");
        assert_eq!(parser.parse(user_text.as_bytes()), Received::Other { offset: 7 });
    }
}
