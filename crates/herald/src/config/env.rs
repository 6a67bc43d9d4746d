//! `HERALD_<SECTION>__<KEY>` variables: each must name a config key. A
//! variable that names none is refused with the closest key, and so is one
//! written with a single `_` where the key needs `__`
//! (`HERALD_WEBSOCKET_DEV_MODE`); other single-`_` names (`HERALD_LOG`, the
//! scripts' own variables) are not config and are left alone.

use anyhow::bail;

use super::Config;

/// Every (section, key) the config has.
pub(super) fn known_keys() -> Vec<(String, String)> {
    let Ok(toml::Value::Table(t)) = toml::Value::try_from(Config::default()) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (section, v) in t {
        if let toml::Value::Table(keys) = v {
            for k in keys.keys() {
                out.push((section.clone(), k.clone()));
            }
        }
    }
    out
}

fn var_name(section: &str, key: &str) -> String {
    format!("HERALD_{}__{}", section.to_uppercase(), key.to_uppercase())
}

/// The known variable closest to `name`, if one is close enough to be
/// what was meant.
fn closest(name: &str, known: &[(String, String)]) -> Option<String> {
    known
        .iter()
        .map(|(s, k)| var_name(s, k))
        .map(|v| (strsim::levenshtein(name, &v), v))
        .filter(|(d, v)| *d <= (v.len() / 3).max(2))
        .min()
        .map(|(_, v)| v)
}

/// The config overrides `vars` hold, as (section, key, raw value); an
/// error naming the variable when one looks like a config key but is not.
pub(super) fn overrides(
    vars: impl Iterator<Item = (String, String)>,
) -> anyhow::Result<Vec<(String, String, String)>> {
    let known = known_keys();
    // Any name under `kinds` declares a kind.
    let is_known = |s: &str, k: &str| s == "kinds" || known.iter().any(|(a, b)| a == s && b == k);
    let mut out = Vec::new();
    for (name, value) in vars {
        let Some(rest) = name.strip_prefix("HERALD_") else {
            continue;
        };
        match rest.split_once("__") {
            Some((section, key)) => {
                let (section, key) = (section.to_lowercase(), key.to_lowercase());
                if !is_known(&section, &key) {
                    let hint = closest(&name, &known)
                        .map(|c| format!("; did you mean {c}?"))
                        .unwrap_or_default();
                    bail!(
                        "environment variable {name} names no config key ({section}.{key}){hint}"
                    );
                }
                out.push((section, key, value));
            }
            None => {
                // A single `_` where `__` was meant: any split that names a
                // key.
                let lower = rest.to_lowercase();
                let meant = lower
                    .match_indices('_')
                    .map(|(i, _)| (&lower[..i], &lower[i + 1..]))
                    .find(|(s, k)| is_known(s, k));
                if let Some((s, k)) = meant {
                    bail!(
                        "environment variable {name} is not read: config keys take two underscores \
                         between section and key ({})",
                        var_name(s, k)
                    );
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(list: &[(&str, &str)]) -> impl Iterator<Item = (String, String)> {
        list.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect::<Vec<_>>()
            .into_iter()
    }

    #[test]
    fn every_section_of_the_config_is_known() {
        let known = known_keys();
        for (s, k) in [
            ("websocket", "dev_mode"),
            ("log", "partitions"),
            ("webhook", "url"),
            ("replication", "peers"),
            ("gateway", "api_keys"),
        ] {
            assert!(known.iter().any(|(a, b)| a == s && b == k), "{s}.{k}");
        }
    }

    #[test]
    fn mistyped_variables_are_refused_with_the_key_meant() {
        let e = overrides(vars(&[("HERALD_WEBSOCKET_DEV_MODE", "true")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("HERALD_WEBSOCKET__DEV_MODE"), "{e}");
        let e = overrides(vars(&[("HERALD_WEBSOCKET__DEV_MOD", "true")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("did you mean HERALD_WEBSOCKET__DEV_MODE"), "{e}");
        let e = overrides(vars(&[("HERALD_NOPE__XYZZY_PLUGH", "1")]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("names no config key") && !e.contains("did you mean"),
            "{e}"
        );
    }

    #[test]
    fn other_variables_pass() {
        let o = overrides(vars(&[
            ("HERALD_LOG", "debug"),
            ("HERALD_BASE_PORT", "7400"),
            ("HERALD_LOADGEN_API_KEY", "k"),
            ("PATH", "/bin"),
            ("HERALD_LOG__PARTITIONS", "4"),
        ]))
        .unwrap();
        assert_eq!(o, vec![("log".into(), "partitions".into(), "4".into())]);
    }
}
