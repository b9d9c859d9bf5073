//! TEMPORARY stand-in until the codec lands.
#![allow(missing_docs)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address(String);
impl Address {
    pub fn new(s: &str) -> Result<Address, String> {
        if s.contains('.')
            && !s.contains("..")
            && !s.ends_with('.')
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._~-".contains(&b))
        {
            Ok(Address(s.to_owned()))
        } else {
            Err("invalid".into())
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}
