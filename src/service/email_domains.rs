//! An organization's `allowedEmailDomains`: which emails its users may have.
//!
//! Entries are lower-case ASCII domain names ([`ENTRY_PATTERN`]; an internationalized name in
//! its punycode form, `xn--bcher-kva.example` for `bücher.example`). An email's domain is
//! compared after IDNA normalisation (UTS 46), so letter case never matters. An entry names
//! that domain only (`a.acme.com` is not `acme.com`); `*.acme.com` names every subdomain of
//! `acme.com` (and not `acme.com` itself).

use std::sync::LazyLock;

use regex::Regex;

/// The most entries a list may hold.
pub const MAX_ENTRIES: usize = 50;

/// The longest entry: a DNS name, with room for `*.`.
pub const MAX_ENTRY_CHARS: usize = 255;

/// What an entry looks like: an optional `*.`, then two or more labels of lower-case letters,
/// digits and inner hyphens, each at most 63 long. The OpenAPI document states it too.
pub const ENTRY_PATTERN: &str =
    r"^(\*\.)?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$";

static ENTRY: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(ENTRY_PATTERN).expect("a valid pattern"));

/// The prefix of an entry that admits subdomains.
const SUBDOMAINS: &str = "*.";

/// Checks an entry; the message says why it is refused.
pub fn checked_entry(entry: &str) -> Result<String, String> {
    let domain = entry.strip_prefix(SUBDOMAINS).unwrap_or(entry);
    if entry.len() > MAX_ENTRY_CHARS || !ENTRY.is_match(entry) || ascii_domain(domain).is_none() {
        return Err(format!(
            "{entry:?} is not a lower-case domain name (punycode for an internationalized one; \
             `*.acme.com` for subdomains)"
        ));
    }
    Ok(entry.to_owned())
}

/// Whether `email` may be a user's under `entries` (checked); any when empty.
pub fn admits(entries: &[String], email: &str) -> bool {
    if entries.is_empty() {
        return true;
    }
    let Some(domain) = email
        .rsplit_once('@')
        .and_then(|(_, domain)| ascii_domain(domain))
    else {
        return false;
    };
    entries
        .iter()
        .any(|entry| match entry.strip_prefix(SUBDOMAINS) {
            Some(parent) => domain
                .strip_suffix(parent)
                .is_some_and(|rest| rest.len() > 1 && rest.ends_with('.')),
            None => *entry == domain,
        })
}

/// `domain` after IDNA normalisation (lower-case ASCII, punycode for non-ASCII labels), if it
/// has at least two labels and normalises (a malformed `xn--` label does not).
fn ascii_domain(domain: &str) -> Option<String> {
    let ascii = idna::domain_to_ascii(domain).ok()?;
    (ascii.contains('.') && !ascii.ends_with('.') && !ascii.starts_with('.')).then_some(ascii)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(entries: &[&str]) -> Vec<String> {
        entries
            .iter()
            .map(|entry| checked_entry(entry).expect("valid entry"))
            .collect()
    }

    #[test]
    fn domains_compare_after_idna_normalisation() {
        let entries = list(&["xn--bcher-kva.example"]);
        assert!(admits(&entries, "ada@XN--BCHER-KVA.example"));
        assert!(admits(&entries, "ada@bücher.example"));
        assert!(admits(&entries, "ada@BÜCHER.example"));
        assert!(admits(&list(&["acme.com"]), "Ada@ACME.Com"));
    }

    #[test]
    fn a_subdomain_is_not_the_domain_unless_the_entry_says_so() {
        let plain = list(&["acme.com"]);
        assert!(!admits(&plain, "ada@a.acme.com"));
        assert!(!admits(&plain, "ada@notacme.com"));
        let subdomains = list(&["*.acme.com"]);
        assert!(admits(&subdomains, "ada@a.acme.com"));
        assert!(admits(&subdomains, "ada@b.a.acme.com"));
        assert!(!admits(&subdomains, "ada@acme.com"));
        assert!(!admits(&subdomains, "ada@xacme.com"));
        assert!(admits(&[], "anyone@anywhere.example"));
        assert!(!admits(&plain, "no-at-sign"));
    }

    #[test]
    fn entries_must_be_lower_case_ascii_domain_names() {
        for bad in [
            "Acme.com",
            "acme",
            "acme..com",
            "a b.com",
            "*.",
            "*acme.com",
            "acme.com.",
            "",
            "@acme.com",
            "bücher.example",
            "-a.example",
            "xn--zz-.example",
        ] {
            assert!(checked_entry(bad).is_err(), "{bad:?}");
        }
        assert_eq!(checked_entry("*.acme.com").as_deref(), Ok("*.acme.com"));
        assert!(checked_entry("ab--c.example").is_ok());
    }
}
