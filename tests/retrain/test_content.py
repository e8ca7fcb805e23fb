"""Content keys: one input keeps its key through JSON, the scoring log's float64 copy, a client's float32 array,
whitespace a client adds to a text and pixels sent as floats; a different input gets another key."""

from __future__ import annotations

import unicodedata
from datetime import datetime, timezone

import numpy as np
import orjson

from perftune.retrain.content import Keys, row_keys

ROWS = np.array([[6, 148, 72, 35, 0, 33.6, 0.627, 50], [1, 85, 66, 29, 0, 26.6, 0.351, 31]], dtype=np.float64)


def test_a_table_row_keeps_its_key_through_json_float32_and_the_scoring_logs_copy():
    key = row_keys(ROWS, "table")
    through_json = np.asarray(orjson.loads(orjson.dumps(ROWS.tolist())), dtype=np.float64)
    float32 = np.asarray(orjson.loads(orjson.dumps(ROWS.astype(np.float32).tolist())), dtype=np.float64)
    assert float32[0, 6] != ROWS[0, 6]  # 0.6269999742507935: a float32 array's value is not the float64 one
    copied = np.frombuffer(np.ascontiguousarray(ROWS).tobytes(), dtype=np.float64).reshape(2, -1)
    as_ints = np.asarray(orjson.loads(orjson.dumps([[int(v) if v == int(v) else v for v in r] for r in ROWS.tolist()])))
    for same in (through_json, float32, copied, as_ints):
        assert row_keys(same, "table") == key
    assert row_keys(np.array([[-0.0, np.nan]]), "table") == row_keys(np.array([[0.0, -np.nan]]), "table")


def test_a_table_row_that_differs_in_one_value_has_another_key():
    other = ROWS.copy()
    other[0, 6] = 0.6271
    keys = row_keys(other, "table")
    assert keys[0] != row_keys(ROWS, "table")[0] and keys[1] == row_keys(ROWS, "table")[1]


def test_a_text_keeps_its_key_through_whitespace_and_unicode_forms_but_not_other_words():
    stored = "Ad sales boost Time Warner profit\n\nQuarterly profits at café Warner rose 76%."
    sent = "  Ad sales boost  Time Warner profit\r\n\r\nQuarterly profits at " + "cafe\u0301 Warner rose 76%.\n"
    assert unicodedata.normalize("NFC", "cafe\u0301") == "café"
    assert row_keys(np.array([[stored]], dtype=object), "text") == row_keys(np.array([sent], dtype=object), "text")
    for other in (stored.lower(), stored.replace("76%", "77%"), stored.replace("Ad sales", "Adsales")):
        assert row_keys(np.array([other], dtype=object), "text") != row_keys(np.array([stored], dtype=object), "text")


def test_an_image_keeps_its_key_as_float_pixels_and_in_either_shape():
    image = np.random.default_rng(0).integers(0, 256, (3, 28, 28)).astype(np.uint8)
    sent = image.reshape(3, 784).astype(np.float64) + 0.2  # pixels a client sent as floats
    assert row_keys(sent, "images") == row_keys(image, "images")
    brighter = image.reshape(3, 784).astype(np.float64)
    brighter[1, 400] = (brighter[1, 400] + 1) % 256
    keys = row_keys(brighter, "images")
    assert keys[1] != row_keys(image, "images")[1] and keys[0] == row_keys(image, "images")[0]


def test_keys_say_which_rows_are_among_them():
    among = Keys.of(ROWS[:1], "table") | Keys.of(np.array([[9.0] * 8]), "table")
    assert len(among) == 2
    assert among.contains(row_keys(ROWS, "table")).tolist() == [True, False]
    assert Keys().contains([]).shape == (0,) and row_keys(np.empty((0, 0)), "table") == []


def test_rows_read_back_from_the_scoring_log_have_the_keys_of_the_rows_sent(tmp_path):
    """Both ways the scoring log keeps inputs: the server's float64 copy, and JSON only (a dead-letter replay)."""
    from perftune.monitor.window import labelled, since
    from perftune.serve.feedback import attach_labels
    from perftune.serve.scoring import inputs_f64, insert_rows, scoring_engine

    engine = scoring_engine(f"sqlite:///{tmp_path / 's.db'}")
    at = datetime.now(timezone.utc)
    rows = [{"request_id": key, "client_id": None, "at": at, "model": "clf", "version": "1",
             "endpoint": "invocations", "rows": 2, "inputs": orjson.dumps(ROWS.tolist()).decode(),
             "inputs_f64": copy, "outputs": "[0, 1]", "latency_ms": 1.0}
            for key, copy in (("f64", inputs_f64(ROWS)), ("json", None))]  # fmt: skip
    insert_rows(engine, rows)
    attach_labels(engine, "clf", [("f64", [0, 1]), ("json", [0, 1])])
    got = labelled(engine, "clf", "1", since(engine, "clf", "1", None))
    engine.dispose()
    assert len(got) == 4 and row_keys(got.X, "table") == row_keys(ROWS, "table") * 2
