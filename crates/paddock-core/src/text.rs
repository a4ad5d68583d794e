//! Text from byte streams.

/// Turns byte chunks into text without splitting a UTF-8 character: an
/// incomplete sequence at the end waits for the next chunk.
#[derive(Default)]
pub struct Utf8Chunks {
    carry: Vec<u8>,
}

impl Utf8Chunks {
    pub fn push(&mut self, bytes: &[u8]) -> String {
        // Joined only when a character was left unfinished (rare): the
        // common chunk is decoded where it lies.
        let joined;
        let data: &[u8] = if self.carry.is_empty() {
            bytes
        } else {
            let mut v = std::mem::take(&mut self.carry);
            v.extend_from_slice(bytes);
            joined = v;
            &joined
        };
        let mut out = String::with_capacity(data.len());
        let mut done = 0;
        for chunk in data.utf8_chunks() {
            out.push_str(chunk.valid());
            done += chunk.valid().len();
            let bad = chunk.invalid();
            if bad.is_empty() {
                continue;
            }
            // At the very end, the start of a character that the next chunk
            // may finish waits; anything else is one U+FFFD per bad piece,
            // as from_utf8_lossy would give.
            let at_end = done + bad.len() == data.len();
            if at_end && std::str::from_utf8(bad).is_err_and(|e| e.error_len().is_none()) {
                self.carry.extend_from_slice(bad);
            } else {
                out.push(char::REPLACEMENT_CHARACTER);
            }
            done += bad.len();
        }
        out
    }

    pub fn finish(&mut self) -> String {
        let text = String::from_utf8_lossy(&self.carry).into_owned();
        self.carry.clear();
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_bytes_next_to_a_cut_spoil_nothing_else() {
        let mut d = Utf8Chunks::default();
        // A truncated sequence, then a whole euro sign: one U+FFFD, one €.
        let mut s = d.push(&[0xE2, 0x82]);
        s += &d.push(&[0xE2, 0x82, 0xAC]);
        s += &d.finish();
        assert_eq!(s, "\u{FFFD}\u{20AC}");
        // A Latin-1 byte in a chunk whose last character is cut.
        let mut d = Utf8Chunks::default();
        let mut s = d.push(&[b'a', 0xE9, b'b', 0xE2, 0x9C]);
        s += &d.push(&[0x93]);
        s += &d.finish();
        assert_eq!(s, "a\u{FFFD}b\u{2713}");
        // Left unfinished at the end: U+FFFD.
        let mut d = Utf8Chunks::default();
        let mut s = d.push(&[b'x', 0xF0, 0x9F]);
        s += &d.finish();
        assert_eq!(s, "x\u{FFFD}");
    }

    #[test]
    fn utf8_chunks_never_split_a_character() {
        let bytes = "aé✓😀b".as_bytes();
        for cut in 0..bytes.len() {
            let mut d = Utf8Chunks::default();
            let mut s = d.push(&bytes[..cut]);
            s.push_str(&d.push(&bytes[cut..]));
            s.push_str(&d.finish());
            assert_eq!(s, "aé✓😀b");
        }
    }
}
