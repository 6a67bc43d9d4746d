//! API keys and their scopes. A presented key is compared with every
//! configured key in constant time (no early exit on the first differing
//! byte, none on the first matching key).

/// What a key may do; each scope includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    /// Read routes: follower counts, inboxes, preferences.
    Read,
    /// Posting events, importing the graph, writing preferences and mutes.
    Ingest,
    /// `/v1/admin/*` and, with keys configured, `/metrics`.
    Admin,
}

/// The configured keys.
#[derive(Debug, Clone, Default)]
pub struct ApiKeys {
    keys: Vec<(Vec<u8>, Scope)>,
}

impl ApiKeys {
    /// `read`, `ingest` and `admin` keys (a key listed twice gets its
    /// widest scope).
    pub fn new(read: &[String], ingest: &[String], admin: &[String]) -> ApiKeys {
        let mut keys = Vec::new();
        for (list, scope) in [
            (read, Scope::Read),
            (ingest, Scope::Ingest),
            (admin, Scope::Admin),
        ] {
            for k in list {
                keys.push((k.as_bytes().to_vec(), scope));
            }
        }
        ApiKeys { keys }
    }

    /// No key configured: every route is open (development).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The scope of `presented`, if it is a configured key.
    pub fn scope_of(&self, presented: &str) -> Option<Scope> {
        let p = presented.as_bytes();
        let mut best: Option<Scope> = None;
        for (k, scope) in &self.keys {
            if ct_eq(k, p) {
                best = best.max(Some(*scope));
            }
        }
        best
    }
}

/// Equal, in time that depends on the lengths only.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    let mut d = (a.len() ^ b.len()) as u8 | u8::from(a.len() != b.len());
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        d |= x ^ y;
    }
    d == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_nest_and_keys_compare_exactly() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let k = ApiKeys::new(&s(&["r-key"]), &s(&["i-key"]), &s(&["a-key", "i-key"]));
        assert_eq!(k.scope_of("r-key"), Some(Scope::Read));
        assert_eq!(k.scope_of("a-key"), Some(Scope::Admin));
        assert_eq!(k.scope_of("i-key"), Some(Scope::Admin));
        assert_eq!(k.scope_of("r-ke"), None);
        assert_eq!(k.scope_of("r-key "), None);
        assert_eq!(k.scope_of(""), None);
        assert!(Scope::Admin >= Scope::Ingest && Scope::Ingest >= Scope::Read);
    }
}
