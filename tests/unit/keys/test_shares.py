"""keys/shares.py: a share file is also the custodian's printable sheet, and it reads back to the same share
(ssss lines and SLIP-39 words made by the real shamir-mnemonic library); a damaged, cut-off or edited file is
refused with a message that never quotes the share."""

from __future__ import annotations

import pytest
import shamir_mnemonic

from ansible_collections.nodekeep.backup.plugins.module_utils.keys.shares import (
    BEGIN,
    END,
    ShamirError,
    parse_share,
    render_share_file,
    share_file_name,
    share_fingerprint,
)

SSSS_LINE = "nkdeadbeef-2-" + "0123456789abcdef" * 4
KEY_SHARE = "nkdeadbeefc-2-" + "89abcdef" * 8
CHECK = {"hmac_sha256": "ab" * 32, "age_public_key": "age1qqqqexample"}


def meta(scheme: str, **more) -> dict:
    return dict(
        scheme=scheme, threshold=2, count=3, check=CHECK, label="the age identity of prod", split_id="deadbeef",
        created="2026-12-07T16:00:00Z", secret_size=32, encoding="hex", **more,
    )  # fmt: skip


def slip39_words(index: int = 1) -> str:
    groups = shamir_mnemonic.generate_mnemonics(1, [(2, 3)], bytes(range(16)), b"")
    return groups[0][index - 1]


def test_an_ssss_share_file_reads_back_to_its_share():
    text = render_share_file(SSSS_LINE, meta("ssss"), 2, "alice", KEY_SHARE)
    assert "ssss-combine -t 2 -x" in text and "Custodian: alice" in text
    share = parse_share(text, "share-2-alice.txt")
    assert (share.scheme, share.index, share.text, share.threshold, share.count) == ("ssss", 2, SSSS_LINE, 2, 3)
    assert (share.custodian, share.split_id, share.secret_size, share.token) == ("alice", "deadbeef", 32, "nkdeadbeef")
    assert share.check == CHECK and share.check_key_share == KEY_SHARE
    assert share.describe() == "share 2 (alice) from share-2-alice.txt"
    assert share_file_name(2, "alice") == "share-2-alice.txt"


def test_a_slip39_sheet_reads_back_to_its_words():
    words = slip39_words(3)
    text = render_share_file(words, meta("slip39"), 3, "bob", KEY_SHARE)
    assert "shamir recover" in text and "Words: %d" % len(words.split()) in text
    share = parse_share(text, "sheet")
    assert (share.scheme, share.index, share.text, share.threshold) == ("slip39", 3, words, 2)
    # typed by hand from the sheet: numbered words, other case, the check key share on its own line
    numbered = "\n".join("%d. %s" % (n + 1, w.upper()) for n, w in enumerate(words.split()))
    typed = parse_share(numbered + "\nCheck-Key-Share: " + KEY_SHARE)
    assert (typed.text, typed.index, typed.check_key_share) == (words, 3, KEY_SHARE)
    assert typed.fingerprint == share.fingerprint


def test_a_bare_ssss_line_and_its_fingerprint():
    share = parse_share(SSSS_LINE)
    assert (share.scheme, share.index) == ("ssss", 2)
    # the fingerprint is of the value: the same share with or without its token
    assert share_fingerprint(SSSS_LINE) == share_fingerprint(SSSS_LINE.split("-", 1)[1])
    assert share_fingerprint(SSSS_LINE) != share_fingerprint("nkdeadbeef-3-" + "0123456789abcdef" * 4)


def test_a_misspelled_slip39_word_is_refused_without_quoting_the_share():
    words = slip39_words().split()
    words[5] = "zzzzz" if words[5] != "zzzzz" else "yyyyy"
    with pytest.raises(ShamirError) as refused:
        parse_share(" ".join(words), "bob's sheet")
    message = str(refused.value)
    assert "bob's sheet is not a valid SLIP-39 share" in message
    assert not any(" ".join(words[at : at + 2]) in message for at in range(len(words) - 1))  # no run of words


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (lambda text: text.split(END)[0], "is cut off: it has no end line"),
        (lambda text: text.replace("Format: nodekeep.shamir-share/v1", "Format: other/v9"), "is not a nodekeep"),
        (lambda text: text.replace("Threshold: 2", "Threshold: two"), "has damaged headers"),
        (lambda text: text.replace("Share: 2 of 3", "Share: 3 of 3"), "says share 3 but its line is share 2"),
        (lambda text: text.replace(SSSS_LINE, "not a share"), "holds no valid ssss share line"),
    ],
)
def test_a_damaged_share_file_is_refused(damage, expected):
    text = damage(render_share_file(SSSS_LINE, meta("ssss"), 2, "alice", KEY_SHARE))
    assert BEGIN in text
    with pytest.raises(ShamirError, match=expected):
        parse_share(text, "share-2-alice.txt")


def test_something_else_is_named_as_such():
    with pytest.raises(ShamirError, match="a share is neither a nodekeep share file, an ssss share line"):
        parse_share("hello world")
