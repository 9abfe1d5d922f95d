//! Page sizes for keyset-paginated lists.

use super::ValidationError;

/// How many rows one page holds: 1 to 100, 20 when the client does not say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageSize(u8);

impl PageSize {
    pub const MAX: u8 = 100;
    pub const DEFAULT: PageSize = PageSize(20);

    pub fn new(raw: i64) -> Result<Self, ValidationError> {
        match u8::try_from(raw) {
            Ok(n) if (1..=Self::MAX).contains(&n) => Ok(Self(n)),
            _ => Err(ValidationError::new(
                "page_size",
                format!("must be between 1 and {}", Self::MAX),
            )),
        }
    }

    pub fn get(self) -> i64 {
        i64::from(self.0)
    }
}

impl Default for PageSize {
    fn default() -> Self {
        Self::DEFAULT
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_default_is_twenty() {
        assert_eq!(PageSize::default().get(), 20);
    }

    proptest! {
        #[test]
        fn accepts_exactly_one_to_one_hundred(n in any::<i64>()) {
            prop_assert_eq!(PageSize::new(n).is_ok(), (1..=100).contains(&n));
        }
    }
}
