"""The redaction rules (issue 13): every credential form, in every field the journal stores, and the cheap
test that lets most events skip them. The journal is the second line of defence: what reaches it
unredacted stays for ever (hash-chained), so it hides whatever the first line missed."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from journal import Journal
from journal.redact import REDACTED, redact, scrub_text, suspect

CANARY = "cAnArY-9f3c1e"

# (text with the canary in a credential position, what it must become)
FORMS = {
    "userinfo_with_password": (f"s3://KEYID:{CANARY}@bucket/x", "s3://KEYID:<redacted>@bucket/x"),
    "password_with_slash": (f"s3://KEYID:{CANARY}/a+b@bucket/x", "s3://KEYID:<redacted>@bucket/x"),
    "userinfo_token_only": (f"https://{CANARY}@host/x", "https://<redacted>@host/x"),
    "query_secret": (f"s3://bucket/x?secret={CANARY}", "s3://bucket/x?secret=<redacted>"),
    "query_access_key_secret": (f"oss://b/x?v=1&access_key_secret={CANARY}",
                                "oss://b/x?v=1&access_key_secret=<redacted>"),
    "presigned_sigv4": (f"https://h/b/k?X-Amz-Credential=AKIA%2F1&X-Amz-Signature={CANARY}&X-Amz-Date=1",
                        "https://h/b/k?X-Amz-Credential=<redacted>&X-Amz-Signature=<redacted>&X-Amz-Date=1"),
    "presigned_v2": (f"https://h/b/k?OSSAccessKeyId=LTAI1&Expires=1&Signature={CANARY}",
                     "https://h/b/k?OSSAccessKeyId=<redacted>&Expires=1&Signature=<redacted>"),
    "sas_sig": (f"https://acct.blob/c?sv=2020&sig={CANARY}", "https://acct.blob/c?sv=2020&sig=<redacted>"),
    "quoted_in_a_message": (f"bad storage URI 's3://bucket/p?token={CANARY}': no '?'",
                            "bad storage URI 's3://bucket/p?token=<redacted>': no '?'"),
    "authorization_header": (f"Authorization: AWS4-HMAC-SHA256 Credential=AKIA/x, Signature={CANARY}",
                             "Authorization: <redacted>"),
    "bearer": (f"sent Bearer {CANARY}", "sent Bearer <redacted>"),
}

KEEP = [  # look alike, hold nothing: unchanged
    "local:///backups/a@b/token=x", "local:///tmp/a:b@c", "root@vm", "user@host:22", "s3://bucket/prefix",
    "key=BACKUP_1/data/h:9779/data0/1/x.sst size=3 sha256=ab", "error=bad hint=x step=PREFLIGHT",
    "https://host:8080/path", "s3://KEYID:<redacted>@b", "https://<redacted>@h",
]


@pytest.mark.parametrize("tag", list(FORMS))
def test_every_credential_form_is_scrubbed(tag):
    text, want = FORMS[tag]
    assert scrub_text(text) == want
    assert CANARY not in scrub_text(text) and suspect(text)
    assert scrub_text(want) == want  # idempotent: scrubbing twice changes nothing


@pytest.mark.parametrize("text", KEEP)
def test_lookalikes_are_kept(text):
    assert scrub_text(text) == text


_PIECES = st.sampled_from(["a", "/", "=", "&", "?", "@", ":", " ", "'", "s3://", "https://", "x=", "secret", "Token",
                           "sig", "PASS", "access_key", "Authorization", "bearer ", "private", "key", "9", "."])


@settings(max_examples=400, deadline=None)
@given(st.lists(_PIECES, max_size=14).map("".join))
def test_what_the_cheap_test_lets_through_needs_no_scrubbing(text):
    """The store and the output skip the rules when ``suspect`` says no: it must never skip a change."""
    if not suspect(text):
        assert scrub_text(text) == text and redact({text: text}) == {text: text}
    assert scrub_text(scrub_text(text)) == scrub_text(text)


def _all_bytes(path) -> bytes:
    return b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*") if p.is_file())


def test_events_of_every_type_are_redacted_in_the_file(tmp_path):
    """Not only params and target: OperationFailed, StepCompleted facts, domain events, batches."""
    path = tmp_path / "journal.db"
    j = Journal.open(path)
    op = j.create_operation(kind="backup", who="w", version="v", params={"storage": FORMS["query_secret"][0]},
                            target=FORMS["userinfo_token_only"][0])
    with j.driver(op.id) as w:
        w.append("OperationFailed", {"step": "PREFLIGHT", "error": FORMS["quoted_in_a_message"][0],
                                     "hint": FORMS["presigned_sigv4"][0]})
        w.append("StepCompleted", {"step": "X", "facts": {"endpoint": FORMS["userinfo_with_password"][0],
                                                          "nested": [{"api_token": CANARY}]}})
        w.append_batch([("FileCopied", {"key": "BACKUP_1/x", "size": 1}),
                        ("Anything", {"note": FORMS["authorization_header"][0]})])
        w.append("PartUploaded", {"key": "k", "etag": '"0a"'}, durable=False)
    got = {e.type: e.data for e in j.events(op.id)}
    assert got["FileCopied"] == {"key": "BACKUP_1/x", "size": 1}  # untouched
    assert got["StepCompleted"]["facts"]["nested"] == [{"api_token": REDACTED}]
    assert j.operation(op.id).target == FORMS["userinfo_token_only"][1]
    assert j.operation(op.id).params == {"storage": FORMS["query_secret"][1]}
    assert j.verify().ok
    j.close()
    assert CANARY.encode() not in _all_bytes(path)
