"""Per-format column mappings and the ingest configuration (TOML-overridable).

Every vendor format is described by a :class:`FormatSpec`: the source fields it needs, each with
an ordered list of candidate header names (the standard exchange name first, then common vendor
variants, English and Chinese) and, for coded fields, a table from vendor code to canonical value
(numeric and letter codes, and the ASCII ordinals some vendors store instead of letters: 70 = 'F').

A header is matched case-insensitively after trimming spaces and a UTF-8 BOM; the first candidate
present wins. :class:`IngestConfig` (from a TOML file or a dict) overrides column names
(``[columns] price = "成交价"``) and extends code tables (``[codes.side] "买" = 1``) for any other
layout, and sets the parsing options. Every key has a documented default.
"""

from __future__ import annotations

import datetime as dt
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from fbgpu.data.ingest.errors import MappingError

Kind = Literal["int", "float", "code", "time", "date", "symbol", "market", "str"]


@dataclass(frozen=True)
class SourceField:
    """One field a format reads.

    ``name`` is the canonical source-field name used in code and in ``[columns]`` overrides;
    ``kind`` says how values are parsed: ``int`` (int64, float notation accepted when integral),
    ``float``, ``code`` (looked up in ``codes``), ``time`` (clock or datetime, see
    :func:`fbgpu.data.ingest.values.parse_time`), ``date``, ``symbol`` (a security code),
    ``market`` (exchange code) or ``str``.
    """

    name: str
    kind: Kind
    candidates: tuple[str, ...]
    required: bool = True
    codes: Mapping[str, Any] | None = None
    allow_empty: bool = False  # a required column whose cells may be empty (NaN)
    constant: str | None = None  # ``[constants]``: every row holds this text, no column read


def norm_code(value: str) -> str:
    """Normalised code text: trimmed, upper-case, without a trailing ``.0`` (pandas floats)."""
    v = value.strip().upper()
    if v.endswith(".0") and v[:-2].lstrip("-").isdigit():
        v = v[:-2]
    return v


def _codes(pairs: Mapping[Any, Any]) -> dict[str, Any]:
    return {norm_code(str(k)): v for k, v in pairs.items()}


# ASCII ordinals appear where a vendor stored the exchange's one-letter codes as numbers.
SIDE_CODES = _codes({"1": 1, "2": -1, "B": 1, "S": -1, "49": 1, "50": -1, "66": 1, "83": -1,
                     "BUY": 1, "SELL": -1, "买": 1, "卖": -1, "买入": 1, "卖出": -1})
TRADE_FLAG_CODES = _codes({**SIDE_CODES, "0": 0, "N": 0, "78": 0, "48": 0, "": 0,
                           "UNKNOWN": 0, "中性": 0})
EXEC_TYPE_CODES = _codes({"F": "trade", "70": "trade", "4": "cancel", "52": "cancel",
                          "成交": "trade", "撤单": "cancel", "撤销": "cancel"})
SZSE_ORD_TYPE_CODES = _codes({"2": "limit", "50": "limit", "1": "market", "49": "market",
                              "U": "best", "85": "best", "限价": "limit", "市价": "market",
                              "本方最优": "best"})
SSE_ORDER_KIND_CODES = _codes({"A": "add", "2": "add", "65": "add", "D": "delete", "10": "delete",
                               "68": "delete", "S": "status", "83": "status",
                               "新增": "add", "删除": "delete", "撤单": "delete"})
SSE_TICK_TYPE_CODES = _codes({"A": "add", "D": "delete", "T": "trade", "S": "status",
                              "65": "add", "68": "delete", "84": "trade", "83": "status"})
MARKET_CODES = _codes({"XSHE": "SZ", "SZSE": "SZ", "SZ": "SZ", "SZE": "SZ", "102": "SZ",
                       "深交所": "SZ", "深圳": "SZ", "XSHG": "SH", "SSE": "SH", "SH": "SH",
                       "SHE": "SH", "101": "SH", "上交所": "SH", "上海": "SH", "XBSE": "BJ",
                       "BSE": "BJ", "BJ": "BJ", "北交所": "BJ"})
BOOL_CODES = _codes({"1": True, "0": False, "TRUE": True, "FALSE": False, "T": True, "F": False,
                     "Y": True, "N": False, "YES": True, "NO": False, "": False,
                     "停牌": True, "连续停牌": True, "停牌一天": True, "暂停上市": True,
                     "交易": False, "正常": False, "正常交易": False, "是": True, "否": False})

DATE = SourceField("date", "date", ("MDDate", "TradingDay", "TradeDate", "trade_date",
                                    "tradingDay", "date", "Date", "日期", "交易日期", "交易日"),
                   required=False)
SYMBOL = SourceField("symbol", "symbol", ("SecurityID", "HTSCSecurityID", "code", "sym",
                                          "ts_code", "windcode", "wind_code", "InstrumentID",
                                          "symbol", "ticker", "stock_code", "证券代码", "代码",
                                          "股票代码"))
MARKET = SourceField("market", "market", ("market", "exchange", "SecurityIDSource", "Market",
                                          "交易所", "市场"), required=False, codes=MARKET_CODES)
TIME = SourceField("time", "time", ("TransactTime", "MDTime", "TradeTime", "OrderTime",
                                    "TickTime", "time", "Time", "datetime", "trade_time",
                                    "时间", "成交时间", "委托时间", "时间戳"))
COMMON = (DATE, SYMBOL, MARKET, TIME)


@dataclass(frozen=True)
class FormatSpec:
    """A vendor input format: its fields, its default exchange, what it produces."""

    name: str
    fields: tuple[SourceField, ...]
    exchange: str | None  # suffix assumed for bare 6-digit codes ("SH"/"SZ"), None = infer
    produces: tuple[str, ...]
    description: str

    def field(self, name: str) -> SourceField:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(name)


F = SourceField
FORMATS: dict[str, FormatSpec] = {}


def _fmt(spec: FormatSpec) -> None:
    FORMATS[spec.name] = spec


_fmt(FormatSpec(
    "szse-trade",
    (*COMMON,
     F("seq", "int", ("ApplSeqNum", "trade_index", "TradeIndex", "成交序号", "成交编号", "序号")),
     F("price", "float", ("LastPx", "TradePrice", "price", "Price", "成交价格", "成交价")),
     F("volume", "float", ("LastQty", "TradeQty", "volume", "Volume", "成交数量", "成交量")),
     F("bid_id", "int", ("BidApplSeqNum", "bid_order", "BuyNo", "TradeBuyNo", "叫买序号",
                         "买方委托索引", "买方委托序号")),
     F("ask_id", "int", ("OfferApplSeqNum", "ask_order", "SellNo", "TradeSellNo", "叫卖序号",
                         "卖方委托索引", "卖方委托序号")),
     F("exec_type", "code", ("ExecType", "function_code", "成交类别", "成交类型"),
       codes=EXEC_TYPE_CODES),
     F("amount", "float", ("TradeMoney", "Amount", "amount", "成交金额"), required=False)),
    "SZ", ("trades", "cancels"),
    "SZSE tick-by-tick trades; ExecType 4 rows are cancellations (to the cancels table)",
))
_fmt(FormatSpec(
    "szse-order",
    (*COMMON,
     F("seq", "int", ("ApplSeqNum", "order_index", "OrderIndex", "委托索引", "委托序号", "序号")),
     F("price", "float", ("Price", "OrderPrice", "price", "委托价格", "委托价")),
     F("volume", "float", ("OrderQty", "volume", "Volume", "委托数量", "委托量")),
     F("side", "code", ("Side", "function_code", "OrderBSFlag", "BSFlag", "委托方向", "买卖方向",
                        "买卖标志"), codes=SIDE_CODES),
     F("ord_type", "code", ("OrdType", "order_kind", "OrderType", "订单类别", "委托类别",
                            "订单类型"), codes=SZSE_ORD_TYPE_CODES)),
    "SZ", ("orders",),
    "SZSE tick-by-tick orders (Side 1/2, OrdType 1 market / 2 limit / U best own side)",
))
_fmt(FormatSpec(
    "sse-trade",
    (*COMMON,
     F("seq", "int", ("ApplSeqNum", "BizIndex", "TradeIndex", "trade_index", "业务序号",
                      "成交序号", "成交编号")),
     F("price", "float", ("TradePrice", "LastPx", "price", "Price", "成交价格", "成交价")),
     F("volume", "float", ("TradeQty", "LastQty", "volume", "Volume", "成交数量", "成交量")),
     F("buy_id", "int", ("TradeBuyNo", "BuyNo", "BidApplSeqNum", "BuyOrderNo", "买方订单号",
                         "叫买序号", "买方委托序号")),
     F("sell_id", "int", ("TradeSellNo", "SellNo", "OfferApplSeqNum", "SellOrderNo",
                          "卖方订单号", "叫卖序号", "卖方委托序号")),
     F("bs_flag", "code", ("TradeBSFlag", "BSFlag", "bsflag", "TickBSFlag", "内外盘标志",
                           "买卖标志", "买卖方向"), codes=TRADE_FLAG_CODES),
     F("amount", "float", ("TradeMoney", "Amount", "amount", "成交金额"), required=False)),
    "SH", ("trades",),
    "SSE tick-by-tick trades (TradeBSFlag B/S/N or 1/2/0)",
))
_fmt(FormatSpec(
    "sse-order",
    (*COMMON,
     F("seq", "int", ("ApplSeqNum", "BizIndex", "OrderIndex", "order_index", "业务序号",
                      "委托序号")),
     F("order_id", "int", ("OrderNO", "OrderNo", "order_no", "OrigOrderNo", "原始订单号",
                           "订单号", "委托编号")),
     F("price", "float", ("OrderPrice", "Price", "price", "委托价格", "委托价")),
     F("volume", "float", ("Balance", "OrderQty", "volume", "剩余委托数量", "委托数量", "委托量")),
     F("side", "code", ("OrderBSFlag", "Side", "BSFlag", "委托方向", "买卖标志", "买卖方向"),
       codes=TRADE_FLAG_CODES),  # N on status rows; adds/deletes must be B/S (checked)
     F("kind", "code", ("OrdType", "OrderType", "order_type", "订单类型", "委托类型"),
       codes=SSE_ORDER_KIND_CODES)),
    "SH", ("orders", "cancels"),
    "SSE tick-by-tick orders: OrdType A (or 2) adds become orders, D (or 10) deletions cancels",
))
_fmt(FormatSpec(
    "sse-tick",
    (*COMMON,
     F("seq", "int", ("BizIndex", "TickIndex", "ApplSeqNum", "业务序号")),
     F("type", "code", ("Type", "TickType", "type", "类型"), codes=SSE_TICK_TYPE_CODES),
     F("buy_id", "int", ("BuyOrderNO", "BuyOrderNo", "BuyNo", "买方订单号")),
     F("sell_id", "int", ("SellOrderNO", "SellOrderNo", "SellNo", "卖方订单号")),
     F("price", "float", ("Price", "price", "TradePrice", "价格")),
     F("volume", "float", ("Qty", "Volume", "volume", "数量")),
     F("bs_flag", "code", ("TickBSFlag", "BSFlag", "bsflag", "买卖标志"), codes=TRADE_FLAG_CODES),
     F("amount", "float", ("TradeMoney", "Amount", "amount", "成交金额"), required=False)),
    "SH", ("trades", "orders", "cancels"),
    "SSE merged tick stream (since 2023-11-27): Type A add, D delete, T trade, S status",
))
_fmt(FormatSpec(
    "minute-bars",
    (DATE, SYMBOL, MARKET, TIME,
     F("open", "float", ("open", "Open", "OpenPx", "开盘价", "开盘")),
     F("high", "float", ("high", "High", "HighPx", "最高价", "最高")),
     F("low", "float", ("low", "Low", "LowPx", "最低价", "最低")),
     F("close", "float", ("close", "Close", "ClosePx", "LastPx", "收盘价", "收盘")),
     F("volume", "float", ("volume", "Volume", "vol", "成交量")),
     F("amount", "float", ("amount", "turnover", "Amount", "amt", "money", "Turnover", "成交额",
                           "成交金额")),
     F("num_trades", "int", ("num_trades", "numTrades", "NumTrades", "trades", "count",
                             "成交笔数"), required=False)),
    None, ("minute",),
    "1-minute bars (CSV/Parquet), bars labelled by their end time by default",
))
_fmt(FormatSpec(
    "daily-bars",
    (DATE, SYMBOL, MARKET,
     F("open", "float", ("open", "Open", "开盘价", "开盘"), allow_empty=True),
     F("high", "float", ("high", "High", "最高价", "最高"), allow_empty=True),
     F("low", "float", ("low", "Low", "最低价", "最低"), allow_empty=True),
     F("close", "float", ("close", "Close", "收盘价", "收盘"), allow_empty=True),
     F("pre_close", "float", ("pre_close", "preclose", "PreClosePx", "PreClosePrice", "昨收价",
                              "前收盘价"), required=False),
     F("volume", "float", ("volume", "Volume", "vol", "成交量"), allow_empty=True),
     F("amount", "float", ("amount", "amt", "turnover", "Amount", "money", "成交额", "成交金额"),
       allow_empty=True),
     F("vwap", "float", ("vwap", "VWAP", "avg_price", "均价"), required=False),
     F("adj_factor", "float", ("adj_factor", "adjfactor", "AdjFactor", "复权因子"),
       required=False),
     F("limit_up", "float", ("limit_up", "up_limit", "HighLimitPrice", "涨停价"),
       required=False),
     F("limit_down", "float", ("limit_down", "down_limit", "LowLimitPrice", "跌停价"),
       required=False),
     F("suspended", "code", ("suspended", "status", "trade_status", "停牌", "交易状态"),
       required=False, codes=BOOL_CODES),
     F("st", "code", ("st", "is_st", "ST", "是否ST"), required=False, codes=BOOL_CODES),
     F("float_cap", "float", ("float_cap", "circ_mv", "float_mv", "流通市值"), required=False),
     F("float_shares", "float", ("float_shares", "floatShares", "float_share", "流通股本"),
       required=False),
     F("industry", "str", ("industry", "SW1", "行业"), required=False)),
    None, ("daily",),
    "daily bars (CSV/Parquet); missing optional fields are filled (see docs/ingest.md)",
))
_fmt(FormatSpec(
    "index-weights",
    (DATE,
     F("symbol", "symbol", ("symbol", "code", "con_code", "stock_code", "SecurityID",
                            "成分券代码", "证券代码"), required=False),
     F("weight", "float", ("weight", "Weight", "i_weight", "权重"), required=False),
     F("index", "str", ("index", "index_code", "指数代码"), required=False)),
    None, ("index_weights",),
    "index constituent weights, long (date, symbol, weight) or wide (date x stock codes)",
))
_fmt(FormatSpec(
    "securities",
    (F("symbol", "symbol", ("sym", "symbol", "ts_code", "code", "SecurityID", "证券代码",
                            "代码")),
     MARKET,
     F("name", "str", ("name", "sec_name", "Symbol", "证券简称", "名称"), required=False),
     F("board", "str", ("board", "market_board", "板块"), required=False),
     F("list_date", "date", ("list_date", "ipoDate", "ipo_date", "上市日期"), required=False),
     F("delist_date", "date", ("delist_date", "lastDate", "退市日期"), required=False),
     F("industry", "str", ("industry", "SW1", "sw_l1", "行业", "申万一级"), required=False),
     F("float_shares", "float", ("float_shares", "floatShares", "float_share", "流通股本"),
       required=False),
     F("category", "str", ("cat", "category", "type", "sec_type", "证券类别"), required=False),
     F("name_start", "date", ("name_start", "start_date", "name_date", "名称起始日"),
       required=False)),
    None, ("securities", "security_names"),
    "security master (one row per security; non-stocks skipped when a category column exists; "
    "with a name_start column, one row per name: a point-in-time name history for ST status)",
))

#: Formats whose trades' side can be set by ``side_rule`` (the others carry no trades).
SIDE_RULE_FORMATS = ("sse-trade", "szse-trade")
#: ``[constants]`` keys accepted as another name of a field.
CONSTANT_ALIASES = {"exchange": "market"}

TIME_FORMATS = ("auto", "clock", "HHMMSSmmm", "HHMMSScc", "HHMMSS", "HHMM", "YYYYMMDDHHMMSSmmm")


class Policies(BaseModel):
    """What happens to rows that break a rule (``error`` stops the ingest, nothing written)."""

    model_config = ConfigDict(extra="forbid")

    #: Trades with price <= 0 or volume <= 0 (after cancellations are separated), orders with
    #: volume <= 0 or limit orders with price <= 0. Default: a corrupt file, stop.
    nonpositive: Literal["error", "drop"] = "error"
    #: Ticks stamped outside 09:15-11:30+grace / 13:00-15:00+grace (trades: outside the auction
    #: prints and continuous sessions). Default drop and count: after-hours fixed-price trades of
    #: the STAR/ChiNext boards (15:05-15:30) are real but not part of the 240-bar day.
    outside_session: Literal["error", "drop", "keep"] = "drop"


class RowFilter(BaseModel):
    """Keep only rows whose vendor ``column`` (trimmed text) is one of ``in`` (or none of
    ``not_in``): ``filter = {column = "Market", in = ["SH"]}``. A value list, no expression is
    evaluated. Filtered rows are counted as ``rows_filtered_out``; row numbers in messages stay
    those of the file."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    column: str = Field(min_length=1)
    in_: list[str] | None = Field(default=None, alias="in")
    not_in: list[str] | None = None

    @model_validator(mode="after")
    def _one_rule(self) -> RowFilter:
        if (self.in_ is None) == (self.not_in is None):
            raise ValueError("a filter needs exactly one of 'in' or 'not_in'")
        return self


class IngestConfig(BaseModel):
    """Ingest options; a TOML mapping file holds the same keys at top level.

    Defaults suit the exchanges' standard field names and the common vendor variants.
    """

    model_config = ConfigDict(extra="forbid")

    #: Text encoding of CSV input (``gbk``/``gb18030`` for many Chinese vendor files).
    encoding: str = "utf-8"
    #: Field delimiter of CSV input: one character (``"\t"`` for tab-separated files).
    delimiter: str = Field(default=",", min_length=1, max_length=1)
    #: Bytes per streamed CSV block (bounded memory: one block of raw text in flight).
    block_size: int = Field(default=16 << 20, ge=1 << 16)
    #: Timestamp format: ``auto`` recognises clock strings ``HH:MM:SS(.fff)`` (optionally
    #: after a date), integers ``YYYYMMDDHHMMSSmmm`` (17 digits), ``HHMMSSmmm`` (8-9 digits) and
    #: ``HHMMSS`` (5-7 digits) and ``HHMM`` (up to 4 digits, bar files), deciding per block by
    #: the largest value; ``HHMMSScc`` (SSE raw hundredths) must be named explicitly.
    time_format: Literal["auto", "clock", "HHMMSSmmm", "HHMMSScc", "HHMMSS", "HHMM",
                         "YYYYMMDDHHMMSSmmm"] = "auto"
    #: Minute bars: whether a bar's time stamps its end (09:31 = first bar) or its start.
    bar_label: Literal["end", "start"] = "end"
    #: Multiply vendor volumes by this (100 when a vendor reports lots of 100 shares).
    volume_multiplier: float = Field(default=1.0, gt=0)
    #: Index name for ``index-weights`` when the file has no index column (e.g. ``csi500``).
    index_name: str | None = None
    #: Index weights unit: ``auto`` treats rows summing to more than 10 as percent.
    weight_unit: Literal["auto", "fraction", "percent"] = "auto"
    #: Seconds of tolerance after 09:25, 11:30 and 15:00 for auction/closing prints.
    session_grace_s: float = Field(default=60.0, ge=0)
    #: Replace whole partitions; default False replaces only the rows of the symbols present in
    #: the input and keeps other symbols' rows (per-stock vendor files ingest one by one).
    replace: bool = False
    #: Derive minute bars (and daily bars where no vendor daily exist) from ingested trades, and
    #: daily bars from ingested minute bars.
    derive_bars: bool = True
    #: Which dates are accepted (fbgpu/data/ingest/calendar_cn.py): ``exchange`` = SSE/SZSE
    #: trading days (weekends and public holidays rejected), ``weekdays`` = any Monday-Friday
    #: (synthetic markets, which model no holidays), ``none`` = no check.
    calendar: Literal["exchange", "weekdays", "none"] = "exchange"
    #: Tick files (trades/orders/ticks) hold one trading day each: a row dated otherwise than the
    #: file's first row rejects the file. ``split_dates = true`` accepts multi-day tick files and
    #: writes each row to its own date's partitions.
    split_dates: bool = False
    #: Where tick ``seq`` comes from: ``column`` (the format's sequence column) or
    #: ``row_order`` (the row's position over all inputs in the order given, 1-based, counting
    #: every data row read, filtered ones included), for files that carry no sequence number.
    seq_from: Literal["column", "row_order"] = "column"
    #: Side of trades (``sse-trade``, ``szse-trade``): ``auto`` = the format's own rule (SSE:
    #: the BS flag; SZSE: order numbers); ``flag`` = the BS-flag column (SSE); ``order_numbers``
    #: = +1 (buyer-initiated) when the buy order number > the sell order number, -1 when it is
    #: lower, 0 when equal (the later order is the aggressor: exchange numbers grow in time);
    #: ``tick`` = the tick rule, +1 when the price is above the stock-day's previous trade price,
    #: -1 below, the previous trade's side when equal, 0 for the day's first trade. With
    #: ``order_numbers`` and ``tick`` no flag column is read, and call-auction prints (before
    #: 09:30, from 14:57) get side 0.
    side_rule: Literal["auto", "flag", "order_numbers", "tick"] = "auto"
    #: Zip inputs: read only the member(s) matching this name or glob (``trades_*.csv``), by
    #: full path inside the archive or by base name. No match is an error listing the members.
    member: str | None = None
    #: ``filter``: one row filter or a list of them (all must hold); see :class:`RowFilter`.
    filter: list[RowFilter] = Field(default_factory=list)
    #: ``[constants]``: source field -> the text every row holds (``market = "SZ"``; ``exchange``
    #: is accepted for ``market``); parsed like a cell of that field, and no column is read.
    constants: dict[str, str | int | float | dt.date] = Field(default_factory=dict)
    #: ``[columns]``: source field -> vendor column name, overriding the built-in candidates.
    columns: dict[str, str] = Field(default_factory=dict)
    #: ``[codes.<field>]``: vendor code -> canonical value, extending the built-in tables.
    codes: dict[str, dict[str, Any]] = Field(default_factory=dict)
    #: What happens to rows breaking a rule (``[policies]``).
    policies: Policies = Field(default_factory=Policies)

    @model_validator(mode="before")
    @classmethod
    def _filter_list(cls, data: Any) -> Any:
        """``filter`` may be one table or a list of tables."""
        if isinstance(data, Mapping) and isinstance(data.get("filter"), Mapping):
            data = {**data, "filter": [data["filter"]]}
        return data


def load_config(mapping: IngestConfig | Mapping[str, Any] | str | Path | None) -> IngestConfig:
    """An :class:`IngestConfig` from a config object, a dict, or a TOML file path."""
    if mapping is None:
        return IngestConfig()
    if isinstance(mapping, IngestConfig):
        return mapping
    source = "mapping"
    if isinstance(mapping, str | Path):
        source = str(mapping)
        try:
            data: Mapping[str, Any] = tomllib.loads(Path(mapping).read_text(encoding="utf-8"))
        except FileNotFoundError as e:
            raise MappingError(mapping, None, None, "mapping file not found") from e
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise MappingError(mapping, None, None, f"mapping file is not valid TOML: {e}") from e
        if "ingest" in data and isinstance(data["ingest"], Mapping):
            data = data["ingest"]
    else:
        data = mapping
    try:
        return IngestConfig.model_validate(dict(data))
    except ValidationError as e:
        first = e.errors()[0]
        loc = ".".join(str(x) for x in first["loc"])
        raise MappingError(source, None, loc, f"bad mapping option: {first['msg']}") from e


def resolve_format(fmt: str, config: IngestConfig) -> FormatSpec:
    """The format's spec with the config's column overrides and extra codes applied."""
    if fmt not in FORMATS:
        raise MappingError("<arguments>", None, None,
                          f"unknown format {fmt!r}; known: {', '.join(FORMATS)}")
    spec = FORMATS[fmt]
    names = [f.name for f in spec.fields]
    constants = {CONSTANT_ALIASES.get(k, k): str(v) for k, v in config.constants.items()}
    for section, keys in (("columns", config.columns), ("codes", config.codes),
                          ("constants", constants)):
        for key in keys:
            if key not in names:
                raise MappingError("<mapping>", None, key,
                                   f"format {fmt} has no field {key!r} in [{section}] "
                                   f"(fields: {', '.join(names)})")
    both = sorted(set(config.columns) & set(constants))
    if both:
        raise MappingError("<mapping>", None, both[0], "a field is given both a column "
                           "([columns]) and a constant ([constants]); keep one")
    drop: set[str] = set()
    if config.seq_from == "row_order":
        if "seq" not in names:
            raise MappingError("<mapping>", None, "seq_from",
                               f"format {fmt} has no sequence number (seq_from = 'row_order' "
                               "applies to tick formats)")
        drop.add("seq")
    if config.side_rule != "auto":
        if fmt not in SIDE_RULE_FORMATS:
            raise MappingError("<mapping>", None, "side_rule",
                               f"side_rule applies to {' and '.join(SIDE_RULE_FORMATS)}, not "
                               f"{fmt}")
        if config.side_rule == "flag" and "bs_flag" not in names:
            raise MappingError("<mapping>", None, "side_rule",
                               f"format {fmt} has no BS-flag field; use side_rule = "
                               "'order_numbers' (its own rule) or 'tick'")
        if config.side_rule in ("order_numbers", "tick"):
            drop.add("bs_flag")
    fields = []
    for f in spec.fields:
        if f.name in drop:
            continue
        cand = (config.columns[f.name],) if f.name in config.columns else f.candidates
        codes = f.codes
        if f.name in config.codes:
            codes = {**(codes or {}), **_codes(config.codes[f.name])}
        fields.append(SourceField(f.name, f.kind, cand, f.required, codes, f.allow_empty,
                                  constants.get(f.name)))
    return FormatSpec(spec.name, tuple(fields), spec.exchange, spec.produces, spec.description)
