//! Text from byte streams.

/// Turns byte chunks into text without splitting a UTF-8 character: an
/// incomplete sequence at the end waits for the next chunk.
#[derive(Default)]
pub struct Utf8Chunks {
    carry: Vec<u8>,
}

impl Utf8Chunks {
    pub fn push(&mut self, mut bytes: &[u8]) -> String {
        let mut out = String::new();
        // First complete a character the last chunk left unfinished.
        while !self.carry.is_empty() && !bytes.is_empty() {
            self.carry.push(bytes[0]);
            bytes = &bytes[1..];
            match std::str::from_utf8(&self.carry) {
                Err(e) if e.error_len().is_none() => continue,
                _ => out.push_str(&String::from_utf8_lossy(&std::mem::take(&mut self.carry))),
            }
        }
        if bytes.is_empty() {
            return out;
        }
        let valid = match std::str::from_utf8(bytes) {
            Ok(_) => bytes.len(),
            Err(e) if e.error_len().is_none() => e.valid_up_to(),
            Err(_) => bytes.len(), // invalid: replaced below
        };
        out.push_str(&String::from_utf8_lossy(&bytes[..valid]));
        self.carry.extend_from_slice(&bytes[valid..]);
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
