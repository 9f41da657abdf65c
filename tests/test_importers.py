"""Importers against the real samples in tests/data (see tests/data/SOURCES.md)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from ticker.recording.formats import detect, load
from ticker.recording.importers.csvcolumns import decimal_seconds_to_ns
from ticker.recording.importers.generic_csv import CsvMapping
from ticker.recording.importers.lobster import session_start_ns
from ticker.recording.problems import Problems, RecordingError

DATA = Path(__file__).parent / "data"
LOBSTER = DATA / "AAPL_2012-06-21_34200000_57600000_message_10.csv"
TARDIS = DATA / "tardis_trades.csv"
COINBASE = DATA / "COINBASE.ws.28.0"

US = 1_000_000


def test_decimal_seconds_parse_exactly_without_float() -> None:
    text = ["34200.004241176", "34200.00426064", "7", "1.5", "1340285400.275016159"]
    ns = decimal_seconds_to_ns(np.array(text))
    assert ns.tolist() == [
        34_200_004_241_176,
        34_200_004_260_640,
        7_000_000_000,
        1_500_000_000,
        1_340_285_400_275_016_159,
    ]
    # through a float, the last digits of a large time are lost
    assert int(float(text[-1]) * 1e9) != 1_340_285_400_275_016_159


def test_lobster_trades_from_the_aapl_sample() -> None:
    assert detect(LOBSTER) == "lobster"
    table = load([LOBSTER], Problems())
    assert len(table) == 159  # the 98 type-4 plus 61 type-5 rows
    assert table.symbols == ["AAPL"]
    assert table.v.sum() == 10_592
    assert (table.p.min(), table.p.max()) == (585.30, 585.93)
    # 2012-06-21 09:30 New York is 13:30 UTC (EDT); first trade 34200.275016159 s
    midnight_utc_us = 1_340_236_800 * US
    assert (
        session_start_ns(np.datetime64("2012-06-21").item()) // 1000
        == midnight_utc_us + 4 * 3600 * US
    )
    ticks = table.ticks()
    assert ticks[0] == {"s": "AAPL", "p": 585.74, "v": 40.0, "t": 1_340_285_400_275_016}
    assert ticks[-1] == {"s": "AAPL", "p": 585.62, "v": 18.0, "t": 1_340_285_447_902_146}
    assert table.first_disorder() is None


def test_lobster_best_bid_ask_from_the_orderbook_beside_it(tmp_path: Path) -> None:
    """The orderbook sample was not copied; a stand-in with the real layout (ask price, ask
    size, bid price, bid size per level, one row per message row) shows the join."""
    message = tmp_path / LOBSTER.name
    shutil.copy(LOBSTER, message)
    rows = len(LOBSTER.read_text().splitlines())
    book = [f"{5860000 + i},100,{5850000 + i},200" for i in range(rows)]
    book[-1] = "9999999999,0,-9999999999,0"  # LOBSTER's empty-level dummies
    (tmp_path / LOBSTER.name.replace("_message_", "_orderbook_")).write_text("\n".join(book))
    table = load([message], Problems())
    plain = load([LOBSTER], Problems())
    first_trade_line = 36  # 34200.275016159,4,... is row 36 of the message file
    assert table.b[0] == (5850000 + first_trade_line - 1) / 10000
    assert table.a[0] == (5860000 + first_trade_line - 1) / 10000
    assert np.array_equal(table.p, plain.p) and np.isnan(plain.b).all()


def test_tardis_trades_sample() -> None:
    assert detect(TARDIS) == "tardis"
    table = load([TARDIS], Problems())
    assert len(table) == 9999 and table.symbols == ["BTCUSDT"]
    assert (table.p.min(), table.p.max()) == (9653.07, 9710.70)
    ticks = table.ticks()
    assert ticks[0] == {"s": "BTCUSDT", "p": 9682.0, "v": 0.132, "t": 1582329602111000}
    assert ticks[-1] == {"s": "BTCUSDT", "p": 9666.84, "v": 0.07, "t": 1582337147728000}
    assert table.first_disorder() is None


def test_coinbase_counts_each_trade_once_with_the_ticker_quotes() -> None:
    assert detect(COINBASE) == "coinbase"
    table = load([COINBASE], Problems())
    assert len(table) == 97  # the match messages; ticker repeats would make 97 + 97
    names = np.array(table.symbols)[table.sym]
    counts = dict(zip(*np.unique(names, return_counts=True), strict=True))
    assert counts == {
        "BAND-BTC": 8,
        "BAND-GBP": 4,
        "DASH-BTC": 15,
        "NMR-EUR": 8,
        "NU-GBP": 1,
        "SKL-BTC": 8,
        "SKL-GBP": 1,
        "SKL-USD": 52,
    }
    first, last = table.ticks()[0], table.ticks()[-1]
    # the first match (line 56) carries the SKL-BTC quote of the ticker on line 22
    assert first == {
        "s": "SKL-BTC",
        "p": 1.305e-05,
        "b": 1.302e-05,
        "a": 1.305e-05,
        "v": 985.0,
        "t": 1618677817089723,
    }
    assert (last["s"], last["p"], last["v"], last["t"]) == (
        "SKL-USD",
        0.7902,
        18.0,
        1618677846669388,
    )
    assert (table.p.min(), table.p.max()) == (1.303e-05, 67.021)
    assert table.first_disorder() is None


def test_generic_csv_with_a_column_mapping(tmp_path: Path) -> None:
    path = tmp_path / "quotes.csv"
    path.write_text("when,px,qty,bid\n1.5,10.25,3,10.2\n2.000001,10.5,1,10.4\n")
    mapping = CsvMapping.parse("t=when,p=px,v=qty,b=bid,s=:XYZ", time_unit="s")
    table = load([path], Problems(), mapping=mapping)
    assert table.ticks() == [
        {"s": "XYZ", "p": 10.25, "b": 10.2, "v": 3.0, "t": 1_500_000},
        {"s": "XYZ", "p": 10.5, "b": 10.4, "v": 1.0, "t": 2_000_001},
    ]
    with pytest.raises(RecordingError, match="needs a column mapping"):
        load([path], Problems())
    with pytest.raises(ValueError, match="needs t, p and s"):
        CsvMapping.parse("t=when,p=px")


def test_generic_csv_iso_times_and_symbol_column(tmp_path: Path) -> None:
    path = tmp_path / "trades.csv"
    path.write_text(
        "time,sym,price\n2024-01-02T03:04:05.000006Z,AAA,1\n2024-01-02T03:04:06Z,BBB,2\n"
    )
    table = load([path], Problems(), mapping=CsvMapping.parse("t=time,s=sym,p=price", "iso"))
    assert table.symbols == ["AAA", "BBB"]
    assert table.t.tolist() == [1704164645000006, 1704164646000000]


# -- bad files ---------------------------------------------------------------------------


def _broken_copy(tmp_path: Path, source: Path, line: int, text: str) -> Path:
    lines = source.read_text().splitlines(keepends=True)
    lines[line - 1] = text + "\n"
    path = tmp_path / source.name
    path.write_text("".join(lines))
    return path


def test_lobster_bad_row_names_file_line_and_column(tmp_path: Path) -> None:
    path = _broken_copy(tmp_path, LOBSTER, 36, "34200.275016159,4,5740544,40,58574x0,-1")
    with pytest.raises(RecordingError) as err:
        load([path], Problems())
    assert str(err.value) == f"{path}:36: price must be an integer, got '58574x0'"
    problems = Problems("skip")
    table = load([path], problems)
    assert len(table) == 158 and problems.skipped == 1
    assert problems.examples == [str(err.value)]


def test_lobster_short_row(tmp_path: Path) -> None:
    path = _broken_copy(tmp_path, LOBSTER, 3, "34200.004447484,1,16113594")
    with pytest.raises(RecordingError, match=r":3: 3 field\(s\), expected at least 5"):
        load([path], Problems())


def test_tardis_bad_row(tmp_path: Path) -> None:
    path = _broken_copy(tmp_path, TARDIS, 5, "binance-futures,BTCUSDT,16x,1,2,buy,9682,0.01")
    with pytest.raises(RecordingError, match=r"tardis_trades.csv:5: timestamp must be an integer"):
        load([path], Problems())
    assert len(load([path], Problems("skip"))) == 9998


def test_coinbase_bad_line(tmp_path: Path) -> None:
    path = _broken_copy(tmp_path, COINBASE, 56, '1618677817.1295161: {"type":"match","price"')
    with pytest.raises(RecordingError, match=r"COINBASE.ws.28.0:56: bad message"):
        load([path], Problems())
    assert len(load([path], Problems("skip"))) == 96


def test_lobster_file_name_must_carry_symbol_and_date(tmp_path: Path) -> None:
    path = tmp_path / "aapl.csv"
    shutil.copy(LOBSTER, path)
    with pytest.raises(RecordingError, match="needs a column mapping"):
        load([path], Problems())
    with pytest.raises(RecordingError, match="TICKER_DATE_START_END_message_LEVEL"):
        load([path], Problems(), fmt="lobster")


def test_out_of_order_is_reported_and_sort_fixes_it(tmp_path: Path) -> None:
    lines = TARDIS.read_text().splitlines()
    lines[3], lines[4] = lines[4].replace(",1582329602150000,", ",1582329602100000,"), lines[3]
    path = tmp_path / "tardis_trades.csv"
    path.write_text("\n".join(lines))
    with pytest.raises(RecordingError, match=r":4: timestamps go backwards at line 4 .*--sort"):
        load([path], Problems())
    problems = Problems()
    table = load([path], problems, sort=True)
    assert table.first_disorder() is None and len(table) == 9999
    assert problems.warnings == [f"{path}: out of order from line 4: sorted by time (--sort)"]


def test_empty_and_unknown_files(tmp_path: Path) -> None:
    empty = tmp_path / "x.csv"
    empty.write_text("")
    with pytest.raises(RecordingError, match="empty file"):
        load([empty], Problems(), mapping=CsvMapping.parse("t=a,p=b,s=:X"))
    blob = tmp_path / "blob.bin"
    blob.write_bytes(b"\x00\x01binary")
    with pytest.raises(RecordingError, match="cannot tell the format"):
        load([blob], Problems())
    with pytest.raises(RecordingError, match="no such file"):
        load([tmp_path / "missing.jsonl"], Problems())


def test_symbols_the_bus_would_refuse_are_an_error(tmp_path: Path) -> None:
    path = tmp_path / "long.csv"
    path.write_text(
        TARDIS.read_text().replace(",BTCUSDT,", ",BTCUSDT-PERPETUAL-WITH-A-VERY-LONG-NAME,")
    )
    with pytest.raises(RecordingError, match="is not a valid symbol"):
        load([path], Problems())


@pytest.mark.parametrize("name", ["BTCUSDT@1m", "BTC USDT", "BTC*"])
def test_a_recorded_symbol_outside_the_one_rule_is_an_error(tmp_path: Path, name: str) -> None:
    """``BTCUSDT@1m`` would read back as a candle topic: a recording's symbols follow the
    rule every other way in follows."""
    path = tmp_path / "odd.csv"
    path.write_text(TARDIS.read_text().replace(",BTCUSDT,", f",{name},"))
    with pytest.raises(RecordingError, match="is not a valid symbol: a symbol is 1 to 32"):
        load([path], Problems())
