//! Bounds-checked binary encoding shared by signed structures and wire frames: big-endian
//! integers, `u16`-length strings, `u32`-length byte strings. Decoding never allocates more than
//! the input it was given and never panics.

/// Input that does not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("truncated: {what} needs more bytes than remain")]
    Truncated { what: &'static str },
    #[error("unknown {what} tag {tag}")]
    UnknownTag { what: &'static str, tag: u8 },
    #[error("{what} is invalid: {detail}")]
    Invalid { what: &'static str, detail: String },
    #[error("{count} trailing bytes after the message")]
    Trailing { count: usize },
}

/// Appends encoded values to a buffer.
#[derive(Default)]
pub struct Writer(pub Vec<u8>);

impl Writer {
    pub fn u8(&mut self, value: u8) -> &mut Self {
        self.0.push(value);
        self
    }
    pub fn u32(&mut self, value: u32) -> &mut Self {
        self.0.extend_from_slice(&value.to_be_bytes());
        self
    }
    pub fn u64(&mut self, value: u64) -> &mut Self {
        self.0.extend_from_slice(&value.to_be_bytes());
        self
    }
    pub fn fixed(&mut self, value: &[u8]) -> &mut Self {
        self.0.extend_from_slice(value);
        self
    }
    /// A string of at most `u16::MAX` bytes; callers only pass validated names.
    pub fn str(&mut self, value: &str) -> &mut Self {
        let len = u16::try_from(value.len()).unwrap_or(u16::MAX);
        self.0.extend_from_slice(&len.to_be_bytes());
        self.0
            .extend_from_slice(&value.as_bytes()[..usize::from(len)]);
        self
    }
    pub fn bytes(&mut self, value: &[u8]) -> &mut Self {
        let len = u32::try_from(value.len()).unwrap_or(u32::MAX);
        self.u32(len);
        self.0.extend_from_slice(&value[..len as usize]);
        self
    }
}

/// Reads encoded values from a slice.
pub struct Reader<'a> {
    input: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(input: &'a [u8]) -> Self {
        Self { input }
    }

    pub fn take(&mut self, len: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.input.len() < len {
            return Err(DecodeError::Truncated { what });
        }
        let (head, rest) = self.input.split_at(len);
        self.input = rest;
        Ok(head)
    }
    pub fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.take(1, what)?[0])
    }
    pub fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array(what)?))
    }
    pub fn u64(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array(what)?))
    }
    pub fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], DecodeError> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }
    pub fn str(&mut self, what: &'static str) -> Result<&'a str, DecodeError> {
        let len = u16::from_be_bytes(self.array(what)?);
        let raw = self.take(usize::from(len), what)?;
        std::str::from_utf8(raw).map_err(|_| DecodeError::Invalid {
            what,
            detail: "not UTF-8".into(),
        })
    }
    pub fn bytes(&mut self, what: &'static str) -> Result<&'a [u8], DecodeError> {
        let len = self.u32(what)? as usize;
        self.take(len, what)
    }
    /// A count of items that each take at least `min_item_len` bytes, checked against the input
    /// left so that a forged count cannot make the caller reserve memory.
    pub fn count(&mut self, what: &'static str, min_item_len: usize) -> Result<usize, DecodeError> {
        let count = self.u32(what)? as usize;
        if count.saturating_mul(min_item_len.max(1)) > self.input.len() {
            return Err(DecodeError::Truncated { what });
        }
        Ok(count)
    }
    pub fn finish(self) -> Result<(), DecodeError> {
        match self.input.len() {
            0 => Ok(()),
            count => Err(DecodeError::Trailing { count }),
        }
    }
}

impl clan_error::Hint for DecodeError {}
clan_error::register!(DecodeError);
