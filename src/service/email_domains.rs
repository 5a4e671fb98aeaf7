//! An organization's `allowedEmailDomains`: which emails its users may have.
//!
//! Entries and email domains are compared after IDNA normalisation (UTS 46, with the DNS
//! length and character rules), so `Bücher.example`, `bücher.example` and
//! `xn--bcher-kva.example` are one domain. An entry names that domain only (`a.acme.com` is not
//! `acme.com`); `*.acme.com` names every subdomain of `acme.com` (and not `acme.com` itself).

/// The most entries a list may hold.
pub const MAX_ENTRIES: usize = 50;

/// The prefix of an entry that admits subdomains.
const SUBDOMAINS: &str = "*.";

/// An entry as it is stored: its domain in lower-case ASCII, `*.` kept; the message says why
/// it is refused.
pub fn normalized_entry(entry: &str) -> Result<String, String> {
    let (prefix, domain) = match entry.strip_prefix(SUBDOMAINS) {
        Some(domain) => (SUBDOMAINS, domain),
        None => ("", entry),
    };
    if domain != domain.to_lowercase() {
        return Err(format!("{entry:?} must be lower case"));
    }
    let ascii = ascii_domain(domain).ok_or_else(|| {
        format!("{entry:?} is not a domain name (write `*.acme.com` for subdomains)")
    })?;
    Ok(format!("{prefix}{ascii}"))
}

/// Whether `email` may be a user's under `entries` (stored, normalised); any when empty.
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

/// `domain` in lower-case ASCII (punycode for non-ASCII labels), if it is a domain name: at
/// least two labels of letters, digits and hyphens, within DNS's lengths.
fn ascii_domain(domain: &str) -> Option<String> {
    let ascii = idna::domain_to_ascii_strict(domain).ok()?;
    (ascii.contains('.') && !ascii.ends_with('.')).then_some(ascii)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(entries: &[&str]) -> Vec<String> {
        entries
            .iter()
            .map(|entry| normalized_entry(entry).expect("valid entry"))
            .collect()
    }

    #[test]
    fn domains_compare_after_idna_normalisation() {
        assert_eq!(
            normalized_entry("bücher.example").as_deref(),
            Ok("xn--bcher-kva.example")
        );
        let entries = list(&["bücher.example"]);
        assert!(admits(&entries, "ada@xn--bcher-kva.example"));
        assert!(admits(&entries, "ada@BÜCHER.example"));
        assert!(admits(
            &list(&["xn--bcher-kva.example"]),
            "ada@bücher.example"
        ));
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
    fn entries_must_be_lower_case_domain_names() {
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
        ] {
            assert!(normalized_entry(bad).is_err(), "{bad:?}");
        }
        assert_eq!(normalized_entry("*.acme.com").as_deref(), Ok("*.acme.com"));
    }
}
