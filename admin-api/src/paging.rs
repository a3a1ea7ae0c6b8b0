//! `page` / `page_size` of list requests: parsing, bounds and offset math, without IO.
use model::ValidationError;

pub const MAX_PAGE_SIZE: u64 = 500;

/// One 1-based page of `size` resources.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    pub page: u64,
    pub size: u64,
}

impl Page {
    /// How many resources come before this page.
    pub fn offset(self) -> u64 {
        (self.page - 1).saturating_mul(self.size)
    }
}

/// `page_size` turns paging on (1..=500; APISIX allows 10..=500); `page` defaults to 1.
/// `page` alone is refused rather than ignored, since the list would not be paged.
pub fn parse(page: Option<&str>, page_size: Option<&str>) -> Result<Option<Page>, ValidationError> {
    let number = |field: &str, raw: &str, max: u64| {
        raw.parse::<u64>()
            .ok()
            .filter(|n| (1..=max).contains(n))
            .ok_or_else(|| {
                ValidationError::new(
                    field,
                    format!("must be an integer from 1 to {max}, got {raw:?}"),
                )
            })
    };
    let page = page
        .map(|p| number("page", p, u32::MAX as u64))
        .transpose()?;
    let Some(raw_size) = page_size else {
        return match page {
            None => Ok(None),
            Some(_) => Err(ValidationError::new(
                "page_size",
                "is required with page (from 1 to 500)",
            )),
        };
    };
    let size = number("page_size", raw_size, MAX_PAGE_SIZE)?;
    Ok(Some(Page {
        page: page.unwrap_or(1),
        size,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(page: Option<&str>, size: Option<&str>, expected: Result<Option<(u64, u64)>, &str>) {
        let got = parse(page, size)
            .map(|p| p.map(|p| (p.page, p.offset())))
            .map_err(|e| e.to_string());
        match expected {
            Ok(want) => assert_eq!(got, Ok(want), "{page:?} {size:?}"),
            Err(needle) => {
                let err = got.expect_err("should fail");
                assert!(err.contains(needle), "{page:?} {size:?}: {err}");
            }
        }
    }

    #[test]
    fn paging() {
        check(None, None, Ok(None));
        check(None, Some("10"), Ok(Some((1, 0))));
        check(Some("1"), Some("10"), Ok(Some((1, 0))));
        check(Some("3"), Some("10"), Ok(Some((3, 20))));
        check(Some("2"), Some("1"), Ok(Some((2, 1))));
        check(
            Some("4294967295"),
            Some("500"),
            Ok(Some((4294967295, 2147483647000))),
        );
        check(
            Some("2"),
            None,
            Err("invalid field \"page_size\": is required"),
        );
        check(
            None,
            Some("0"),
            Err("invalid field \"page_size\": must be an integer from 1 to 500"),
        );
        check(None, Some("501"), Err("page_size"));
        check(None, Some("ten"), Err("page_size"));
        check(Some("0"), Some("10"), Err("invalid field \"page\""));
        check(Some("-1"), Some("10"), Err("invalid field \"page\""));
        check(
            Some("4294967296"),
            Some("10"),
            Err("invalid field \"page\""),
        );
    }
}
