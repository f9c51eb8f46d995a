//! Bit-granular writer and reader, most significant bit first.

/// Appends bits to a byte vector.
#[derive(Debug, Default, Clone)]
pub struct BitWriter {
    bytes: Vec<u8>,
    /// Bits used in the last byte (0 = the last byte is full or there is none).
    used: u8,
}

impl BitWriter {
    pub fn with_capacity(bytes: usize) -> Self {
        BitWriter {
            bytes: Vec::with_capacity(bytes),
            used: 0,
        }
    }

    /// Write the low `n` bits of `value` (n ≤ 64), most significant first.
    pub fn write(&mut self, value: u64, n: u32) {
        debug_assert!(n <= 64);
        let mut left = n;
        while left > 0 {
            if self.used == 0 {
                self.bytes.push(0);
            }
            let free = 8 - u32::from(self.used);
            let take = free.min(left);
            let shift = left - take;
            let chunk = ((value >> shift) & ((1u64 << take) - 1)) as u8;
            let last = self.bytes.len() - 1;
            self.bytes[last] |= chunk << (free - take);
            self.used = ((u32::from(self.used) + take) % 8) as u8;
            left -= take;
        }
    }

    pub fn bit(&mut self, b: bool) {
        self.write(u64::from(b), 1);
    }

    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The bytes, trimmed to their length.
    pub fn into_boxed(self) -> Box<[u8]> {
        self.bytes.into_boxed_slice()
    }

    /// Heap bytes held (capacity, not length: what memory accounting must count).
    pub fn capacity(&self) -> usize {
        self.bytes.capacity()
    }
}

/// Reads bits written by [`BitWriter`].
#[derive(Debug, Clone)]
pub struct BitReader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> BitReader<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        BitReader { bytes, pos: 0 }
    }

    /// Read `n` bits (n ≤ 64); `None` past the end.
    pub fn read(&mut self, n: u32) -> Option<u64> {
        if n == 0 {
            return Some(0);
        }
        if self.pos + n as usize > self.bytes.len() * 8 {
            return None;
        }
        if n > 56 {
            let hi = self.read(n - 32)?;
            let lo = self.read(32)?;
            return Some((hi << 32) | lo);
        }
        // Load the 8 bytes from the current one (zero-padded at the end) and cut n bits.
        let at = self.pos / 8;
        let word = match self.bytes.get(at..at + 8) {
            Some(b) => u64::from_be_bytes(b.try_into().unwrap_or([0; 8])),
            None => {
                let mut word = [0u8; 8];
                let avail = self.bytes.len() - at;
                word[..avail].copy_from_slice(&self.bytes[at..]);
                u64::from_be_bytes(word)
            }
        };
        let w = word << (self.pos % 8);
        self.pos += n as usize;
        Some(w >> (64 - n))
    }

    pub fn bit(&mut self) -> Option<bool> {
        self.read(1).map(|b| b == 1)
    }

    /// The next `n` bits (1 ≤ n ≤ 56) without consuming them; bits past the end read as 0.
    pub fn peek(&self, n: u32) -> u64 {
        debug_assert!((1..=56).contains(&n));
        let at = self.pos / 8;
        let word = match self.bytes.get(at..at + 8) {
            Some(b) => u64::from_be_bytes(b.try_into().unwrap_or([0; 8])),
            None => {
                let mut word = [0u8; 8];
                let avail = self.bytes.len().saturating_sub(at);
                word[..avail].copy_from_slice(&self.bytes[at.min(self.bytes.len())..]);
                u64::from_be_bytes(word)
            }
        };
        (word << (self.pos % 8)) >> (64 - n)
    }

    /// Consume `n` bits already looked at with [`BitReader::peek`]; `None` past the end.
    pub fn skip(&mut self, n: u32) -> Option<()> {
        if self.pos + n as usize > self.bytes.len() * 8 {
            return None;
        }
        self.pos += n as usize;
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_of_mixed_widths() {
        let items: Vec<(u64, u32)> = (0..500u64)
            .map(|i| {
                let n = (i % 64) as u32 + 1;
                let v = i.wrapping_mul(0x9E37_79B9_7F4A_7C15)
                    & if n == 64 { u64::MAX } else { (1 << n) - 1 };
                (v, n)
            })
            .collect();
        let mut w = BitWriter::default();
        for &(v, n) in &items {
            w.write(v, n);
        }
        let mut r = BitReader::new(w.bytes());
        for &(v, n) in &items {
            assert_eq!(r.read(n), Some(v), "width {n}");
        }
        // Padding bits of the last byte read as zero; past them there is nothing.
        while r.bit().is_some() {}
        assert_eq!(r.read(1), None);
    }
}
