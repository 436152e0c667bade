//! Keys from the bytes a terminal sends in raw mode: UTF-8 characters,
//! control keys and the escape sequences of arrows, PgUp/PgDn, Home/End.
//! Fed one byte at a time (the menu reads one byte per `read`, so bytes
//! typed ahead of a pick stay in the terminal for the session).

/// A key the menu understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    Char(char),
    Enter,
    Backspace,
    /// Ctrl-W: delete the last word.
    DeleteWord,
    /// Ctrl-U: clear the line.
    ClearLine,
    Esc,
    /// Ctrl-C.
    Interrupt,
    /// Ctrl-D.
    EndOfInput,
    /// Ctrl-L.
    Redraw,
    Up,
    Down,
    PageUp,
    PageDown,
    Home,
    End,
}

/// Longest escape sequence kept; longer ones are dropped.
const MAX_SEQUENCE: usize = 16;

#[derive(Debug, Default)]
enum State {
    #[default]
    Ground,
    /// After ESC.
    Escape,
    /// After ESC [ (parameters so far).
    Csi(Vec<u8>),
    /// After ESC O.
    Ss3,
    /// Inside a UTF-8 character: bytes so far, bytes expected.
    Utf8(Vec<u8>, usize),
}

/// Turns bytes into keys.
#[derive(Debug, Default)]
pub struct Decoder {
    state: State,
    last_was_cr: bool,
}

impl Decoder {
    pub fn new() -> Decoder {
        Decoder::default()
    }

    /// Whether a lone ESC waits for the rest of a sequence (the caller
    /// waits briefly, then calls [`Decoder::flush`]).
    pub fn pending(&self) -> bool {
        !matches!(self.state, State::Ground)
    }

    /// Ends a pending sequence: a lone ESC is the Esc key; anything
    /// partial is dropped.
    pub fn flush(&mut self) -> Option<Key> {
        match std::mem::take(&mut self.state) {
            State::Escape => Some(Key::Esc),
            _ => None,
        }
    }

    /// Feeds one byte; the keys it completes go to `out`.
    pub fn feed(&mut self, byte: u8, out: &mut Vec<Key>) {
        let was_cr = std::mem::replace(&mut self.last_was_cr, byte == b'\r');
        match std::mem::take(&mut self.state) {
            State::Ground => self.ground(byte, was_cr, out),
            State::Escape => match byte {
                b'[' => self.state = State::Csi(Vec::new()),
                b'O' => self.state = State::Ss3,
                0x1b => {
                    out.push(Key::Esc);
                    self.state = State::Escape;
                }
                _ => {
                    // Alt+key: the Esc, then the key.
                    out.push(Key::Esc);
                    self.ground(byte, was_cr, out);
                }
            },
            State::Csi(mut params) => match byte {
                0x40..=0x7e => out.extend(csi(&params, byte)),
                0x20..=0x3f if params.len() < MAX_SEQUENCE => {
                    params.push(byte);
                    self.state = State::Csi(params);
                }
                0x20..=0x3f => self.state = State::Csi(params),
                _ => {} // malformed: dropped
            },
            State::Ss3 => out.extend(match byte {
                b'A' => Some(Key::Up),
                b'B' => Some(Key::Down),
                b'H' => Some(Key::Home),
                b'F' => Some(Key::End),
                _ => None,
            }),
            State::Utf8(mut bytes, need) => {
                if byte & 0xc0 != 0x80 {
                    // Broken character: dropped; the byte starts afresh.
                    self.ground(byte, was_cr, out);
                    return;
                }
                bytes.push(byte);
                if bytes.len() < need {
                    self.state = State::Utf8(bytes, need);
                } else if let Some(c) = std::str::from_utf8(&bytes)
                    .ok()
                    .and_then(|s| s.chars().next())
                {
                    out.push(Key::Char(c));
                }
            }
        }
    }

    fn ground(&mut self, byte: u8, was_cr: bool, out: &mut Vec<Key>) {
        let key = match byte {
            b'\r' => Some(Key::Enter),
            b'\n' if was_cr => None,
            b'\n' => Some(Key::Enter),
            0x7f | 0x08 => Some(Key::Backspace),
            0x1b => {
                self.state = State::Escape;
                None
            }
            0x03 => Some(Key::Interrupt),
            0x04 => Some(Key::EndOfInput),
            0x15 => Some(Key::ClearLine),
            0x17 => Some(Key::DeleteWord),
            0x0c => Some(Key::Redraw),
            0x02 => Some(Key::PageUp),   // Ctrl-B
            0x06 => Some(Key::PageDown), // Ctrl-F
            0x10 => Some(Key::Up),       // Ctrl-P
            0x0e => Some(Key::Down),     // Ctrl-N
            0x00..=0x1f => None,
            0x20..=0x7e => Some(Key::Char(byte as char)),
            0xc2..=0xdf => self.start_utf8(byte, 2),
            0xe0..=0xef => self.start_utf8(byte, 3),
            0xf0..=0xf4 => self.start_utf8(byte, 4),
            _ => None,
        };
        out.extend(key);
    }

    fn start_utf8(&mut self, byte: u8, need: usize) -> Option<Key> {
        self.state = State::Utf8(vec![byte], need);
        None
    }
}

fn csi(params: &[u8], last: u8) -> Option<Key> {
    match (params, last) {
        (_, b'A') => Some(Key::Up),
        (_, b'B') => Some(Key::Down),
        (_, b'H') => Some(Key::Home),
        (_, b'F') => Some(Key::End),
        (b"5", b'~') => Some(Key::PageUp),
        (b"6", b'~') => Some(Key::PageDown),
        (b"1" | b"7", b'~') => Some(Key::Home),
        (b"4" | b"8", b'~') => Some(Key::End),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(bytes: &[u8]) -> Vec<Key> {
        let mut decoder = Decoder::new();
        let mut out = Vec::new();
        for &b in bytes {
            decoder.feed(b, &mut out);
        }
        out.extend(decoder.flush());
        out
    }

    #[test]
    fn printable_and_control_keys() {
        assert_eq!(
            keys(b"a1\r\x7f\x03\x04\x15\x17\x0c"),
            [
                Key::Char('a'),
                Key::Char('1'),
                Key::Enter,
                Key::Backspace,
                Key::Interrupt,
                Key::EndOfInput,
                Key::ClearLine,
                Key::DeleteWord,
                Key::Redraw
            ]
        );
    }

    #[test]
    fn cr_lf_is_one_enter_but_lone_lf_counts() {
        assert_eq!(keys(b"\r\n"), [Key::Enter]);
        assert_eq!(keys(b"\n\n"), [Key::Enter, Key::Enter]);
    }

    #[test]
    fn escape_sequences_of_both_cursor_modes() {
        assert_eq!(
            keys(b"\x1b[A\x1b[B\x1bOA\x1bOB\x1b[5~\x1b[6~\x1b[H\x1b[4~\x1b[1;5A"),
            [
                Key::Up,
                Key::Down,
                Key::Up,
                Key::Down,
                Key::PageUp,
                Key::PageDown,
                Key::Home,
                Key::End,
                Key::Up
            ]
        );
    }

    #[test]
    fn a_lone_escape_is_esc_after_flush_and_unknown_sequences_vanish() {
        assert_eq!(keys(b"\x1b"), [Key::Esc]);
        assert_eq!(keys(b"\x1b[200~x\x1b[201~"), [Key::Char('x')]);
        assert_eq!(keys(b"\x1bq"), [Key::Esc, Key::Char('q')]);
        let long: Vec<u8> = [b"\x1b[".as_slice(), &[b'1'; 100], b"~z"].concat();
        assert_eq!(keys(&long), [Key::Char('z')]);
    }

    #[test]
    fn utf8_characters_and_broken_ones() {
        assert_eq!(
            keys("生产é".as_bytes()),
            [Key::Char('生'), Key::Char('产'), Key::Char('é')]
        );
        assert_eq!(keys(&[0xe7, b'a']), [Key::Char('a')]);
        assert_eq!(keys(&[0xff, b'b']), [Key::Char('b')]);
    }
}
