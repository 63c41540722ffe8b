//! Identifiers: the stable ones derived from tokens, and the random ones
//! (trace ids, log ids) that the platforms attach to every response.

use chrono::Utc;

/// FNV-1a, 64 bit. Used instead of `std::hash::DefaultHasher` because its
/// output is specified, so ids derived from a token stay the same across Rust
/// releases and can be recomputed by anyone reading the docs.
fn fnv1a64(text: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// The part of a token that names its owner: everything before the first `.`,
/// or the whole token when it has no dot.
///
/// Tokens issued by the sandbox's refresh endpoints keep the subject of the
/// token they were refreshed from (`alice.at-<random>`), so a creator keeps the
/// same user id / open_id across refreshes, as on the real platforms.
pub fn token_subject(token: &str) -> &str {
    token.split_once('.').map_or(token, |(subject, _)| subject)
}

/// The Instagram user id that `GET /me` reports for a made-up `access_token`
/// not bound to a user (see the crate docs): `"1784"` followed by 13 digits
/// of FNV-1a-64 of the token's subject.
pub fn instagram_user_id(access_token: &str) -> String {
    let digits = fnv1a64(token_subject(access_token)) % 10_000_000_000_000;
    format!("1784{digits:013}")
}

/// The TikTok `open_id` of the creator owning a made-up `token` (an access
/// or refresh token) not bound to a user (see the crate docs): `"sbx-"`
/// followed by FNV-1a-64 of the token's subject in hex.
pub fn tiktok_open_id(token: &str) -> String {
    format!("sbx-{:016x}", fnv1a64(token_subject(token)))
}

/// A Facebook-style `fbtrace_id`: 11 random alphanumeric characters.
pub(crate) fn fbtrace_id() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    uuid::Uuid::new_v4().as_bytes().iter().take(11).map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()])).collect()
}

/// A TikTok-style `log_id`: UTC timestamp followed by random upper-case hex.
pub(crate) fn tiktok_log_id() -> String {
    let random = uuid::Uuid::new_v4().simple().to_string().to_uppercase();
    format!("{}{}", Utc::now().format("%Y%m%d%H%M%S"), &random[..18])
}

/// A fresh random token value (for tokens issued by refresh endpoints).
pub(crate) fn random_token_part() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_ids_are_stable_and_follow_the_subject() {
        assert_eq!(instagram_user_id("alice"), instagram_user_id("alice.refreshed"));
        assert_ne!(instagram_user_id("alice"), instagram_user_id("bob"));
        assert_eq!(instagram_user_id("alice").len(), 17);
        assert_eq!(tiktok_open_id("alice.at-1"), tiktok_open_id("alice.rt-2"));
        // FNV-1a-64 of "" is the offset basis: pins the algorithm down.
        assert_eq!(tiktok_open_id(""), "sbx-cbf29ce484222325");
    }

    #[test]
    fn random_ids_have_the_platform_shapes() {
        let trace = fbtrace_id();
        assert_eq!(trace.len(), 11);
        assert!(trace.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_eq!(tiktok_log_id().len(), 14 + 18);
    }
}
