//! The optional `[admin]` and `[access_log]` sections.

use super::*;

#[test]
fn admin_and_access_log() {
    let text = base_plus("[admin]\nlisten = \"localhost:9901\"\n");
    assert_error(
        &text,
        "localhost",
        "admin.listen",
        &[
            "invalid socket address \"localhost:9901\"",
            "\"127.0.0.1:9901\"",
        ],
    );
    let text = base_plus("[access_log]\nformat = \"text\"\n");
    assert_error(
        &text,
        "text",
        "access_log.format",
        &["unknown format \"text\"; allowed: \"json\""],
    );
}
