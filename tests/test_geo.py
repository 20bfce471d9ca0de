import argparse
import datetime as dt
import subprocess
import sys

import numpy as np
import pytest

from embedder.geo import (
    EPOCH,
    BBox,
    DateRange,
    GeoError,
    UtmZone,
    add_bbox_option,
    bbox_argv,
    check_lonlat,
    check_order,
    day_index,
    index_date,
    parse_date,
    parse_datetime,
)


class _MyError(ValueError):
    pass


def test_leaf_module_imports_nothing_of_the_package() -> None:
    code = "import sys, embedder.geo; print(sorted(m for m in sys.modules if m.startswith('embedder')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['embedder', 'embedder.geo']"


# ------------------------------------------------------------------------------------------------ BBox


@pytest.mark.parametrize(
    "value",
    [
        (8.0, 47.0, 9.0, 48.0),
        [8, 47, 9, 48],
        "8,47,9,48",
        " 8.0, 47.0 ,9.0,48.0 ",
        np.array([8.0, 47.0, 9.0, 48.0]),
        BBox(8.0, 47.0, 9.0, 48.0),
    ],
)
def test_bbox_forms(value: object) -> None:
    b = BBox.parse(value)
    assert b == BBox(8.0, 47.0, 9.0, 48.0)
    assert b.bounds == (8.0, 47.0, 9.0, 48.0) and tuple(b) == b.bounds
    lon0, lat0, lon1, lat1 = b
    assert (lon0, lat0, lon1, lat1) == (8.0, 47.0, 9.0, 48.0)
    assert b.centre == (8.5, 47.5)
    assert all(type(v) is float for v in b)


def test_bbox_parse_returns_a_bbox_as_is() -> None:
    b = BBox(-180, -90, 180, 90)
    assert BBox.parse(b) is b


@pytest.mark.parametrize(
    ("value", "match"),
    [
        ("9,46,10", r"'9,46,10' must be 4 numbers: lon_min, lat_min, lon_max, lat_max"),
        ("a,b,c,d", "must be 4 numbers"),
        ((1.0, 2.0, 3.0, 4.0, 5.0), "must be 4 numbers"),
        (None, "must be 4 numbers"),
        ((8.0, float("nan"), 9.0, 48.0), "non-finite"),
        ("8,47,inf,48", "non-finite"),
        ((8.0, 95.0, 9.0, 96.0), r"out of range \(it looks like \(lat, lon\) order"),
        ((500000.0, 5500000.0, 510000.0, 5510000.0), r"out of range: .*projected coordinates"),
        ((-181.0, 0.0, 0.0, 1.0), "lon in \\[-180, 180\\], lat in \\[-90, 90\\]"),
        ("10,46,9,47", "empty or inverted"),
        ((8.0, 47.0, 8.0, 47.2), "empty or inverted"),
        ((170.0, 0.0, -170.0, 1.0), "antimeridian"),
    ],
)
def test_bbox_refusals(value: object, match: str) -> None:
    with pytest.raises(GeoError, match=match):
        BBox.parse(value)


def test_bbox_constructor_validates_and_error_class_is_the_callers() -> None:
    with pytest.raises(GeoError, match="empty or inverted"):
        BBox(9.0, 47.0, 8.0, 48.0)
    with pytest.raises(_MyError, match="out of range"):
        BBox.parse((8.0, 95.0, 9.0, 96.0), error=_MyError)
    with pytest.raises(GeoError):  # GeoError is a ValueError
        BBox.parse("x")
    assert issubclass(GeoError, ValueError)


def test_one_bbox_option_joins_a_negative_west_and_refuses_four_numbers(
    capsys: pytest.CaptureFixture[str],
) -> None:
    p = argparse.ArgumentParser(prog="x")
    add_bbox_option(p, required=True)
    p.add_argument("--start")
    a = p.parse_args(bbox_argv(["--bbox", "-10,35,5,45", "--start", "2021-01-01"], p))
    assert BBox.parse(a.bbox).bounds == (-10.0, 35.0, 5.0, 45.0) and a.start == "2021-01-01"
    assert p.parse_args(bbox_argv(["--bbox=-1,2,3,4"], p)).bbox == "-1,2,3,4"
    with pytest.raises(SystemExit) as stop:
        bbox_argv(["--bbox", "8", "47", "9", "48"], p)
    assert stop.value.code == 2
    assert "write --bbox 8,47,9,48, not four separate numbers" in capsys.readouterr().err
    assert "W,S,E,N" in p.format_help()


def test_every_command_takes_the_one_bbox_syntax() -> None:
    """cube, stac-snapshot, region and export: ``--bbox W,S,E,N`` and nothing else."""
    from embedder.data.cubes import cli_main as cube
    from embedder.data.snapshot import cli_main as snapshot
    from embedder.serve.cli import cli_export, cli_region

    for main, head in ((cube, ["cat.json"]), (snapshot, ["cat.json", "x.parquet"]), (cli_region, ["s"]),
                       (cli_export, ["s", "o.tif"])):  # fmt: skip
        with pytest.raises(SystemExit) as stop:
            main([*head, "--bbox", "8", "47", "9", "48", "--start", "2021-01-01", "--end", "2021-02-01"])
        assert stop.value.code == 2, main


def test_check_lonlat() -> None:
    assert check_lonlat("8.5", 47) == (8.5, 47.0)
    with pytest.raises(GeoError, match="must be numbers"):
        check_lonlat("east", 47)
    with pytest.raises(GeoError, match=r"out of range \(it looks like \(lat, lon\)"):
        check_lonlat(47.0, 95.0)
    with pytest.raises(_MyError, match=r"out of range: lon must be in \[-180, 180\]"):
        check_lonlat(181.0, 10.0, error=_MyError)
    with pytest.raises(GeoError, match="out of range"):
        check_lonlat(float("nan"), 10.0)


# ----------------------------------------------------------------------------------------------- dates


def test_parse_date_forms() -> None:
    d = dt.date(2021, 6, 30)
    assert parse_date("2021-06-30") == d
    assert parse_date(" 2021-06-30 ") == d
    assert parse_date(d) is d
    assert parse_date(dt.datetime(2021, 6, 30, 23, 59)) == d
    assert parse_date(np.datetime64("2021-06-30T12:00")) == d


@pytest.mark.parametrize(
    ("value", "match"),
    [
        ("05/01/2021", r"start='05/01/2021' is not a date: give it as YYYY-MM-DD"),
        ("20210630", "YYYY-MM-DD"),
        ("May 2021", "YYYY-MM-DD"),
        (20210630, "YYYY-MM-DD"),
        (None, "YYYY-MM-DD"),
        ("2021-02-30", "start='2021-02-30' is not a valid calendar date"),
    ],
)
def test_parse_date_refusals(value: object, match: str) -> None:
    with pytest.raises(GeoError, match=match):
        parse_date(value, name="start")


def test_parse_date_raises_the_callers_error() -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="YYYY-MM-DD"):
        parse_date("soon", error=argparse.ArgumentTypeError)


def test_parse_datetime() -> None:
    utc = dt.UTC
    assert parse_datetime("2021-03-01") == dt.datetime(2021, 3, 1, tzinfo=utc)
    assert parse_datetime(dt.date(2021, 3, 1), end=True) == dt.datetime(
        2021, 3, 1, 23, 59, 59, 999999, tzinfo=utc
    )
    assert parse_datetime("2021-03-01T10:00:00Z") == dt.datetime(2021, 3, 1, 10, tzinfo=utc)
    assert parse_datetime("2021-03-01T12:00:00+02:00") == dt.datetime(2021, 3, 1, 10, tzinfo=utc)
    assert parse_datetime(dt.datetime(2021, 3, 1, 10)) == dt.datetime(2021, 3, 1, 10, tzinfo=utc)
    with pytest.raises(GeoError, match=r"t='2021-03-01T25:00' is not an ISO date or datetime"):
        parse_datetime("2021-03-01T25:00", name="t")
    with pytest.raises(_MyError, match="notadate"):
        parse_datetime("notadate", error=_MyError)


def test_check_order_and_date_range() -> None:
    check_order(dt.date(2021, 1, 1), dt.date(2021, 1, 1))
    with pytest.raises(GeoError, match=r"period 2021-02-01..2021-01-01 ends before its start \(end 2021-01-01 is before start 2021-02-01\); swap them"):  # fmt: skip
        check_order(dt.date(2021, 2, 1), dt.date(2021, 1, 1))
    with pytest.raises(_MyError, match=r"window b\.\.a ends before its start \(end a is before start b\)"):
        check_order(2, 1, name="window", error=_MyError, shown=("b", "a"))

    r = DateRange.parse("2021-01-30", dt.date(2021, 2, 2))
    assert r == DateRange(dt.date(2021, 1, 30), dt.date(2021, 2, 2))
    assert r.days == 4 and str(r) == "2021-01-30..2021-02-02"
    assert dt.date(2021, 2, 2) in r and dt.date(2021, 2, 3) not in r and "2021-02-01" not in r
    assert r.day_indices == (day_index(r.start), day_index(r.end) + 1)
    assert DateRange.parse("2021-01-01", "2021-01-01").days == 1
    with pytest.raises(_MyError, match="before start"):
        DateRange.parse("2021-03-01", "2021-02-01", error=_MyError)
    with pytest.raises(GeoError, match=r"end='2021-13-01' is not a valid calendar date"):
        DateRange.parse("2021-01-01", "2021-13-01")
    with pytest.raises(GeoError, match=r"use DateRange\.parse"):
        DateRange("2021-01-01", "2021-01-02")  # type: ignore[arg-type]
    with pytest.raises(GeoError, match="swap them"):
        DateRange(dt.date(2021, 1, 2), dt.date(2021, 1, 1))


def test_store_day_axis() -> None:
    assert EPOCH == dt.date(2015, 1, 1)
    assert day_index(EPOCH) == 0 and index_date(0) == EPOCH
    assert day_index(dt.date(2016, 1, 1)) == 365
    assert index_date(np.int64(365)) == dt.date(2016, 1, 1)
    assert day_index(dt.date(2014, 12, 31)) == -1
    for k in (0, 1, 400, 3000):
        assert day_index(index_date(k)) == k


# ------------------------------------------------------------------------------------------- UTM zones


@pytest.mark.parametrize(
    ("lon", "lat", "epsg", "name"),
    [
        (8.5, 47.0, 32632, "utm32N"),
        (-180.0, 10.0, 32601, "utm01N"),
        (180.0, 10.0, 32660, "utm60N"),
        (12.0, 0.0, 32633, "utm33N"),
        (-79.9, -0.5, 32717, "utm17S"),
    ],
)
def test_utm_zone_containing(lon: float, lat: float, epsg: int, name: str) -> None:
    z = UtmZone.containing(lon, lat)
    assert (z.epsg, z.name, z.crs) == (epsg, name, f"EPSG:{epsg}")
    assert UtmZone.from_epsg(epsg) == z == UtmZone.from_name(name)
    assert z.west_lon <= lon <= z.west_lon + 6.0 and z.central_lon == z.west_lon + 3.0


def test_utm_zone_refusals() -> None:
    with pytest.raises(GeoError, match=r"zones are 1\.\.60"):
        UtmZone(61)
    with pytest.raises(GeoError, match="EPSG:4326 is not a UTM zone"):
        UtmZone.from_epsg(4326)
    with pytest.raises(_MyError, match="EPSG:32600 is not a UTM zone"):
        UtmZone.from_epsg(32600, error=_MyError)
    for bad in ("utm32", "utm61N", "utm00S", "UTM32N", "32N"):
        with pytest.raises(GeoError, match="not of the form 'utm32N'"):
            UtmZone.from_name(bad)
    assert sorted([UtmZone(33), UtmZone(32, True), UtmZone(32)]) == [
        UtmZone(32),
        UtmZone(32, True),
        UtmZone(33),
    ]
