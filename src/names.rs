//! What makes two names the same user's name: the key a [`Name`](crate::protocol::Name)
//! is compared, hashed and claimed by, on one node and in Redis.
//!
//! Two names that a person reading the user list could take for each other must not be
//! online at once, so the key is not the name as typed: it is Unicode NFC, then full case
//! folding, then the UTS #39 confusable skeleton, then case folding again (a few of the
//! skeleton's prototypes are capitals). `bob`, `Bob`, `BOB` and `bоb` (Cyrillic о) have
//! one key; names are still shown as typed.
//!
//! Folding comes first because case must never tell two names apart. The price: a capital
//! that looks like another lower-case letter (`I` for `l` in `aIice`) is folded before the
//! skeleton could see it, so `aIice` and `alice` stay two names (`a1ice` and `alice` do
//! not). Taking the skeleton first would catch that but make `ALICE` (`I` → `l`) differ
//! from `alice`, which is worse.
//!
//! Crates: `unicode-normalization`, `caseless` and `unicode-security` are the unicode-rs
//! implementations (the last is what rustc's `confusable_idents` lint uses); they carry
//! Unicode's own tables, so a new Unicode version is a crate update, not our code.

use caseless::default_case_fold_str;
use unicode_normalization::UnicodeNormalization;
use unicode_security::confusable_detection::skeleton;

/// The key of a (validated, trimmed) name.
pub fn key(name: &str) -> String {
    let nfc: String = name.nfc().collect();
    let folded = default_case_fold_str(&nfc);
    let skeleton: String = skeleton(&folded).collect();
    // The skeleton is NFD; bring it back to NFC so keys stay short and readable in Redis.
    default_case_fold_str(&skeleton).nfc().collect()
}

#[cfg(test)]
mod tests {
    use super::key;

    #[test]
    fn case_and_confusables_share_a_key() {
        let bob = key("bob");
        // Cyrillic о, Greek ο, fullwidth letters, mathematical bold.
        for other in [
            "Bob",
            "BOB",
            "b\u{043E}b",
            "b\u{03BF}b",
            "ｂｏｂ",
            "\u{1D41B}ob",
        ] {
            assert_eq!(key(other), bob, "{other:?}");
        }
        assert_ne!(key("bobby"), bob);
        assert_ne!(key("rob"), bob);
    }

    #[test]
    fn normalization_forms_share_a_key() {
        // é precomposed and e + combining acute.
        assert_eq!(key("Ren\u{00E9}"), key("rene\u{0301}"));
        // Full case folding: ß and ss.
        assert_eq!(key("Stra\u{00DF}e"), key("STRASSE"));
    }

    #[test]
    fn look_alike_latin_letters() {
        // l and 1 are drawn alike in many fonts; UTS #39 makes them one.
        assert_eq!(key("alice"), key("a1ice"));
        assert_eq!(key("paypal"), key("PAYPA1"));
        assert_eq!(key("rn"), key("m"));
    }

    #[test]
    fn distinct_names_stay_distinct() {
        let names = [
            "alice", "bob", "carol", "dave", "eve", "李雷", "ana", "anna",
        ];
        for (i, a) in names.iter().enumerate() {
            for b in &names[i + 1..] {
                assert_ne!(key(a), key(b), "{a} vs {b}");
            }
        }
    }
}
