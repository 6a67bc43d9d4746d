//! The preference document's tests: any JSON is a document or a named
//! error, the contract's example, each field's error, the webhook channel.
use proptest::prelude::*;

use herald_types::testing::any_json;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Any JSON value as a preference document: a document or a
    /// named invalid field, never a panic.
    #[test]
    fn any_value_is_a_document_or_a_clean_error(v in any_json()) {
        let _ = parse_document(&v);
    }
}

use super::*;
use serde_json::json;

#[test]
fn the_contract_example_is_valid() {
    let d = parse_document(&json!({
        "default": "realtime",
        "kinds": {"like": "digest", "follow": "realtime", "post": "off"},
        "digest": {"interval": "hourly", "timezone": "Europe/Paris", "hour": 9},
        "muted_actors": [42],
        "muted_objects": ["post:7"],
        "quiet_hours": {"start": "22:00", "end": "07:00", "timezone": "Europe/Paris"}
    }))
    .unwrap();
    assert_eq!(d.prefs.kinds["post"], Mode::Off);
    assert_eq!(d.muted_actors, vec![42]);
    let back = Preferences::from_stored(Some(&d.prefs.to_json()));
    assert_eq!(back, d.prefs);
}

#[test]
fn errors_name_the_field() {
    let field = |v: Value| parse_document(&v).unwrap_err().field;
    assert_eq!(field(json!({"colour": 1})), "colour");
    assert_eq!(field(json!({"default": "loud"})), "default");
    assert_eq!(field(json!({"kinds": {"poke": "off"}})), "kinds.poke");
    assert_eq!(field(json!({"kinds": {"like": "sometimes"}})), "kinds.like");
    assert_eq!(
        field(json!({"digest": {"timezone": "Mars/Olympus"}})),
        "digest.timezone"
    );
    assert_eq!(field(json!({"digest": {"hour": 24}})), "digest.hour");
    assert_eq!(field(json!({"digest": {"when": 1}})), "digest.when");
    assert_eq!(
        field(json!({"quiet_hours": {"start": "25:00", "end": "07:00"}})),
        "quiet_hours.start"
    );
    assert_eq!(
        field(json!({"quiet_hours": {"start": "22:00"}})),
        "quiet_hours.end"
    );
    assert_eq!(field(json!({"muted_actors": ["x"]})), "muted_actors");
    assert_eq!(field(json!({"muted_objects": [""]})), "muted_objects");
    assert_eq!(field(json!({"webhook": {"on": true}})), "webhook.on");
    assert_eq!(field(json!({"webhook": {"enabled": 1}})), "webhook.enabled");
    assert_eq!(
        field(json!({"webhook": {"kinds": {"like": "off"}}})),
        "webhook.kinds.like"
    );
    assert_eq!(
        field(json!({"webhook": {"kinds": {"poke": false}}})),
        "webhook.kinds.poke"
    );
    assert_eq!(
        field(json!({"digest": {"channel": "email"}})),
        "digest.channel"
    );
}

#[test]
fn the_webhook_channel_is_on_unless_turned_off() {
    let d = |v: Value| parse_document(&v).unwrap().prefs;
    let all = d(json!({}));
    assert!(all.webhook_allows("comment") && all.webhook_allows("digest"));
    let some = d(json!({"webhook": {"kinds": {"like": false, "digest": false}}}));
    assert!(!some.webhook_allows("like") && !some.webhook_allows("digest"));
    assert!(some.webhook_allows("comment"));
    let none = d(json!({"webhook": {"enabled": false}}));
    assert!(!none.webhook_allows("comment"));
    let mail = d(json!({"digest": {"channel": "webhook"}, "webhook": {"kinds": {"like": false}}}));
    assert_eq!(mail.digest.channel, DigestChannel::Webhook);
    assert_eq!(Preferences::from_stored(Some(&mail.to_json())), mail);
}

/// A stored document naming a kind the configuration no longer declares
/// keeps the user's other choices (a request naming it is refused).
#[test]
fn a_removed_kind_in_a_stored_document_keeps_the_rest() {
    let doc = r#"{"default": "digest", "kinds": {"gone_kind": "off", "like": "realtime"}, "webhook": {"enabled": true, "kinds": {"gone_kind": false}}}"#;
    let p = Preferences::from_stored(Some(doc));
    assert_eq!(p.default, Mode::Digest);
    assert_eq!(p.kinds.get("like"), Some(&Mode::Realtime));
    let v: Value = serde_json::from_str(doc).unwrap();
    assert!(parse_document(&v).is_err());
}
