//! The terminal's current line as the target's output draws it: a bounded
//! model (at most [`MAX_LINE`] characters, the cursor never past it) that
//! command reconstruction reads a line edited on the target's side from.
//!
//! Every count in a control sequence comes from the target and is clamped
//! to the line before it is used, so whatever the target prints the model
//! holds at most `MAX_LINE` characters (32 KiB) and a few dozen bytes of
//! sequence state.

/// The widest line the model keeps, in characters; also the farthest
/// cursor column. Characters drawn past it are dropped (and the line is
/// marked as overflowed: its reading is uncertain).
pub const MAX_LINE: usize = 8192;

/// Most bytes of one control sequence's parameters kept.
const MAX_PARAMS: usize = 32;

/// The terminal's current line, as far as the output says.
#[derive(Default)]
pub struct ScreenLine {
    chars: Vec<char>,
    cursor: usize,
    escape: OutEscape,
    params: String,
    /// Something was drawn past [`MAX_LINE`] since the line began.
    overflowed: bool,
    /// A full-screen program switched to the alternate screen.
    alternate: bool,
}

#[derive(Default, Clone, Copy, PartialEq, Eq)]
enum OutEscape {
    #[default]
    None,
    Start,
    Csi,
    /// OSC / DCS strings: until BEL or ESC \.
    Text,
    TextEsc,
}

impl ScreenLine {
    /// The line's text, trailing blanks trimmed.
    pub fn text(&self) -> String {
        self.chars.iter().collect::<String>().trim_end().to_string()
    }

    /// The text left of the cursor.
    pub fn before_cursor(&self) -> String {
        self.chars[..self.cursor.min(self.chars.len())]
            .iter()
            .collect()
    }

    /// Whether something drawn on this line was lost to the bound.
    pub fn overflowed(&self) -> bool {
        self.overflowed
    }

    /// Whether the alternate screen is in use (a full-screen program:
    /// vim, less, top, tmux).
    pub fn alternate(&self) -> bool {
        self.alternate
    }

    /// Characters held (never more than [`MAX_LINE`]).
    pub fn len(&self) -> usize {
        self.chars.len()
    }

    /// Whether the line holds nothing.
    pub fn is_empty(&self) -> bool {
        self.chars.is_empty()
    }

    /// The cursor column (never more than [`MAX_LINE`]).
    pub fn cursor(&self) -> usize {
        self.cursor
    }

    pub fn feed(&mut self, text: &str) {
        for c in text.chars() {
            self.feed_char(c);
        }
    }

    /// Parameter `i` (0-based) of the sequence, clamped to the line: a
    /// missing or zero one is `default`.
    fn param(&self, i: usize, default: usize) -> usize {
        let Some(text) = self.params.split(';').nth(i) else {
            return default;
        };
        let mut n: usize = 0;
        let mut digits = false;
        for b in text.bytes() {
            if !b.is_ascii_digit() {
                break;
            }
            digits = true;
            n = n.saturating_mul(10).saturating_add(usize::from(b - b'0'));
        }
        if !digits || n == 0 {
            return default;
        }
        n.min(MAX_LINE)
    }

    /// The count of a sequence (first parameter, at least 1).
    fn n(&self) -> usize {
        self.param(0, 1)
    }

    fn clear(&mut self) {
        self.chars.clear();
        self.cursor = 0;
        self.overflowed = false;
    }

    fn feed_char(&mut self, c: char) {
        match self.escape {
            OutEscape::Start => {
                self.escape = match c {
                    '[' => {
                        self.params.clear();
                        OutEscape::Csi
                    }
                    ']' | 'P' | '_' | '^' => OutEscape::Text,
                    _ => OutEscape::None,
                };
                return;
            }
            OutEscape::Text => {
                if c == '\x07' {
                    self.escape = OutEscape::None;
                } else if c == '\x1b' {
                    self.escape = OutEscape::TextEsc;
                }
                return;
            }
            OutEscape::TextEsc => {
                self.escape = if c == '\\' {
                    OutEscape::None
                } else {
                    OutEscape::Text
                };
                return;
            }
            OutEscape::Csi => {
                if ('\u{40}'..='\u{7e}').contains(&c) {
                    self.escape = OutEscape::None;
                    self.csi(c);
                } else if c == '\x1b' {
                    // A new sequence cuts this one short.
                    self.escape = OutEscape::Start;
                } else if self.params.len() < MAX_PARAMS {
                    self.params.push(c);
                }
                return;
            }
            OutEscape::None => {}
        }
        match c {
            '\x1b' => self.escape = OutEscape::Start,
            '\r' => self.cursor = 0,
            '\n' => self.clear(),
            '\x08' => self.cursor = self.cursor.saturating_sub(1),
            '\t' => self.cursor = ((self.cursor / 8 + 1) * 8).min(MAX_LINE),
            c if c.is_control() => {}
            c => self.put(c),
        }
    }

    /// Draws `c` at the cursor and moves it right, within the bound.
    fn put(&mut self, c: char) {
        if self.cursor >= MAX_LINE {
            self.overflowed = true;
            return;
        }
        if self.cursor < self.chars.len() {
            self.chars[self.cursor] = c;
        } else {
            // cursor < MAX_LINE: the padding is bounded too.
            self.chars.resize(self.cursor, ' ');
            self.chars.push(c);
        }
        self.cursor += 1;
    }

    fn csi(&mut self, final_char: char) {
        let n = self.n();
        let len = self.chars.len();
        let at = self.cursor.min(len);
        match final_char {
            // Erase in line: to the end, to the cursor, all.
            'K' => match self.params.as_str() {
                "" | "0" => self.chars.truncate(at),
                "1" => {
                    for c in self.chars.iter_mut().take(self.cursor.saturating_add(1)) {
                        *c = ' ';
                    }
                }
                _ => self.chars.clear(),
            },
            // Cursor forward / back.
            'C' => self.cursor = self.cursor.saturating_add(n).min(MAX_LINE),
            'D' => self.cursor = self.cursor.saturating_sub(n),
            // Cursor to column n (CHA, HPA).
            'G' | '`' => self.cursor = (n - 1).min(MAX_LINE),
            // Cursor position (row;column): the column counts here.
            'H' | 'f' => self.cursor = (self.param(1, 1) - 1).min(MAX_LINE),
            // Delete n characters.
            'P' => {
                let to = at.saturating_add(n).min(len);
                self.chars.drain(at..to);
            }
            // Erase n characters (blanks, the cursor stays).
            'X' => {
                let to = at.saturating_add(n).min(len);
                for c in &mut self.chars[at..to] {
                    *c = ' ';
                }
            }
            // Insert n blanks: what is pushed past the bound is lost.
            '@' => {
                let room = MAX_LINE.saturating_sub(at);
                let blanks = n.min(room);
                if len + blanks > MAX_LINE {
                    self.chars.truncate(MAX_LINE - blanks);
                    self.overflowed = true;
                }
                self.chars.splice(at..at, std::iter::repeat_n(' ', blanks));
            }
            'J' if self.params == "2" => self.clear(),
            // The alternate screen, on and off (modes 1049, 1047, 47).
            'h' | 'l'
                if self.params.starts_with('?')
                    && self.params[1..]
                        .split(';')
                        .any(|mode| matches!(mode, "1049" | "1047" | "47")) =>
            {
                self.alternate = final_char == 'h';
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fed(text: &str) -> ScreenLine {
        let mut s = ScreenLine::default();
        s.feed(text);
        s
    }

    fn assert_bounded(s: &ScreenLine, what: &str) {
        assert!(
            s.len() <= MAX_LINE && s.cursor() <= MAX_LINE && s.chars.capacity() <= 2 * MAX_LINE,
            "{what}: the line must stay within {MAX_LINE} characters, holds {} (capacity {}), cursor {}",
            s.len(),
            s.chars.capacity(),
            s.cursor()
        );
    }

    #[test]
    fn huge_counts_in_every_moving_or_inserting_sequence_stay_within_the_line() {
        let huge = [
            "99999999",
            "9000000000000000000",
            "18446744073709551615",
            "99999999999999999999999999999",
        ];
        for count in huge {
            for seq in ['C', 'D', 'G', '`', '@', 'P', 'X', 'K', 'J', 'b', 'H', 'f'] {
                let text = format!("$ ab\x1b[{count}{seq}.\x1b[{count}{seq}x");
                let s = fed(&text);
                assert_bounded(&s, &format!("ESC[{count}{seq}"));
            }
            let s = fed(&format!("\x1b[1;{count}H.\x1b[{count};{count}f."));
            assert_bounded(&s, "cursor position");
            // Insert at the far end, then draw past it.
            let s = fed(&format!(
                "\x1b[{count}C\x1b[{count}D{}\x1b[{count}@\x1b[{count}C..",
                "y".repeat(100)
            ));
            assert_bounded(&s, "insert then move");
        }
        // Many moderate moves add up to no more than the bound either.
        let s = fed(&"\x1b[5000C.".repeat(1000));
        assert_bounded(&s, "repeated moves");
        assert!(s.overflowed(), "drawing past the bound is noticed");
        let s = fed(&"\x1b[5000@".repeat(1000));
        assert_bounded(&s, "repeated inserts");
        let s = fed(&"\t".repeat(100_000));
        assert_bounded(&s, "tabs");
        let s = fed(&"z".repeat(3 * MAX_LINE));
        assert_bounded(&s, "a long line");
        assert!(s.overflowed());
        // A newline starts a fresh, certain line.
        let s = fed(&format!("{}\r\nok", "z".repeat(3 * MAX_LINE)));
        assert!(!s.overflowed());
        assert_eq!(s.text(), "ok");
    }

    #[test]
    fn sequences_edit_the_line_as_a_terminal_does() {
        assert_eq!(fed("abcdef\x1b[3D\x1b[P").text(), "abcef");
        assert_eq!(fed("abcdef\x1b[3D\x1b[2X").text(), "abc  f");
        assert_eq!(fed("abcdef\x1b[3D\x1b[2@XY").text(), "abcXYdef");
        assert_eq!(fed("abcdef\x1b[3G!").text(), "ab!def");
        assert_eq!(fed("abcdef\x1b[3D\x1b[K").text(), "abc");
        assert_eq!(fed("abc\x1b[2C!").text(), "abc  !");
        assert_eq!(fed("abc\x1b[5;2H!").text(), "a!c");
        assert_eq!(fed("abc\x1b]0;title\x07d").text(), "abcd");
        assert!(fed("\x1b[?1049h").alternate());
        assert!(!fed("\x1b[?1049h\x1b[?1049l").alternate());
        assert!(fed("\x1b[?1;47h").alternate());
    }
}
