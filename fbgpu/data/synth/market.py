"""The day loop of the synthetic market: daily latent dynamics, intraday simulation, writing.

See the package docstring (:mod:`fbgpu.data.synth`) and docs/synth.md for the model.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from fbgpu.data.bars import daily_from_minute, minute_bars_from_trades
from fbgpu.data.schemas import CANCELS, MINUTES_PER_DAY, ORDERS, TRADES
from fbgpu.data.store import Store, atomic_write_bytes, config_hash
from fbgpu.data.synth import orderflow as of
from fbgpu.data.synth.config import SynthConfig, resolve_config
from fbgpu.data.synth.universe import ST_LIMIT, Universe, build_universe
from fbgpu.progress import track

logger = logging.getLogger(__name__)

#: Bumped whenever the generator's output for a given config and seed changes.
GENERATOR_VERSION = "1.0"
SYNTH_JSON = "synth.json"

#: Columns of the ground-truth table ``synth_truth`` (one row per listed stock-day).
TRUTH_COLUMNS: tuple[str, ...] = (
    "informed_state",  # z_t, stationary N(0,1) AR(1): what informed traders know on day t
    "informed_intensity",  # max(z,0) + sell_ratio * max(-z,0): scales informed order counts
    "expected_drift_next",  # informed_drift * z_t: efficient log drift planted for day t+1
    "pressure",  # pi_t: transient uninformed price pressure (log), reverts with psi
    "pressure_shock",  # u_t: today's pressure shock (log)
    "idio_vol",  # sqrt(h_t): idiosyncratic daily volatility (GARCH)
    "efficient_close",  # exp(efficient log price at 15:00), CNY
    "informed_volume_share",  # informed order volume / all order volume that day
    "jump",  # news-jump log size that day (0: none)
    "beta",  # market beta
)


@dataclass
class SynthSummary:
    """What :func:`generate_market` wrote."""

    preset: str
    seed: int
    root: str
    stocks: int
    days: int
    first_date: dt.date
    last_date: dt.date
    trades: int = 0
    orders: int = 0
    cancels: int = 0
    stock_days: int = 0
    elapsed_s: float = 0.0
    tables: list[str] = field(default_factory=list)

    def line(self) -> str:
        """One-line human summary."""
        return (f"synthetic market '{self.preset}' (seed {self.seed}): {self.stocks} stocks x "
                f"{self.days} days ({self.first_date}..{self.last_date}), "
                f"{self.trades:,} trades, {self.orders:,} orders, {self.cancels:,} cancels "
                f"in {self.elapsed_s:.1f} s -> {self.root}")


def _splitmix(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser: decorrelates consecutive integers into well-spread seeds."""
    with np.errstate(over="ignore"):
        z = (x + np.uint64(0x9E3779B97F4A7C15)).astype(np.uint64)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def _profiles(cfg: SynthConfig) -> tuple[np.ndarray, np.ndarray]:
    """(variance share per continuous minute, cumulative arrival weights), both [237]."""
    k = np.arange(of.N_CONT_MIN, dtype=np.float64)
    w = (1.0 + cfg.ushape_open * np.exp(-k / cfg.ushape_open_min)
         + cfg.ushape_close * np.exp(-(of.N_CONT_MIN - 1 - k) / cfg.ushape_close_min)
         + cfg.ushape_pm * np.exp(-np.maximum(k - 120, 0) / 10.0) * (k >= 120))
    vprof = w / w.sum()
    return vprof, np.cumsum(w)


def _round_half_up_cents(pre_c: np.ndarray, permille: np.ndarray) -> np.ndarray:
    """``round(pre_close * permille / 1000)`` in integer cents, halves up (exchange rule)."""
    return (pre_c * permille + 500) // 1000


def _shared_params(cfg: SynthConfig) -> np.ndarray:
    sh = np.zeros(of.N_SHARED)
    sh[of.S_LOT_LOG_SD] = cfg.size_log_sd
    sh[of.S_TAIL_PROB] = cfg.tail_prob
    sh[of.S_TAIL_ALPHA] = cfg.tail_alpha
    sh[of.S_INF_SIZE_MULT] = cfg.informed_size_mult
    sh[of.S_INF_DECAY] = cfg.informed_decay_min
    sh[of.S_INF_MARKETABLE] = cfg.informed_marketable
    sh[of.S_INF_ACCURACY] = cfg.informed_side_accuracy
    sh[of.S_MARKETABLE] = cfg.marketable_share
    sh[of.S_MARKET_ORDER] = cfg.market_order_share
    sh[of.S_CANCEL_PROB] = cfg.cancel_prob
    sh[of.S_CANCEL_MEAN] = cfg.cancel_mean_min
    sh[of.S_DEPTH_BP] = cfg.depth_bp
    sh[of.S_SLIPPAGE_BP] = cfg.slippage_bp
    sh[of.S_AUCTION_DISP_BP] = cfg.auction_disp_bp
    sh[of.S_OPEN_SHARE] = cfg.open_auction_share
    sh[of.S_CLOSE_SHARE] = cfg.close_auction_share
    sh[of.S_INF_SLIPPAGE_BP] = cfg.informed_slippage_bp
    sh[of.S_INF_CANCEL_MEAN] = cfg.informed_cancel_mean_min
    return sh


def _date_array(date: dt.date, n: int) -> pa.Array:
    return pa.array(np.full(n, np.datetime64(date, "D")), type=pa.date32())


def _symbol_array(codes: np.ndarray, dictionary: pa.Array) -> pa.DictionaryArray:
    return pa.DictionaryArray.from_arrays(pa.array(codes.astype(np.int32)), dictionary)


class _Day:
    """Mutable per-stock state carried from one day to the next."""

    def __init__(self, u: Universe, cfg: SynthConfig, rng: np.random.Generator) -> None:
        S = u.n_stocks
        self.pre_c = u.ipo_price_c.copy()  # previous close, integer cents
        self.logp = np.log(self.pre_c / 100.0)  # efficient log price at the last close
        self.adj = np.ones(S)
        self.float_shares = u.float_shares.copy()
        # long-run idiosyncratic variance per stock (cross-sectional dispersion of volatility)
        self.h_bar = (cfg.idio_vol * np.exp(cfg.idio_vol_dispersion * rng.standard_normal(S)
                                            - cfg.idio_vol_dispersion**2 / 2)) ** 2
        self.h_garch = self.h_bar.copy()  # GARCH variance of standardised-regime shocks
        self.sv = cfg.sv_sd * rng.standard_normal(S)  # slow log-volatility regime
        self.h_idio = self.h_bar.copy()  # total idiosyncratic variance of the day
        self.h_mkt = cfg.market_vol**2
        self.eps_prev = np.zeros(S)  # yesterday's idiosyncratic shock (log)
        self.mkt_prev = 0.0
        self.z = rng.standard_normal(S)
        self.z_prev = self.z.copy()
        self.pi = np.zeros(S)
        self.members: dict[str, np.ndarray] = {}


def generate_market(store: Store, preset: str | SynthConfig = "tiny", seed: int = 0,
                    progress: bool = True, durable: bool = True) -> SynthSummary:
    """Generate the synthetic market into ``store``, day by day, and return a summary.

    Writes per trading day the tables ``trades``, ``orders``, ``cancels``, ``minute`` (listed,
    non-suspended stocks), ``daily`` (every listed stock, suspended days included),
    ``index_weights`` (``csi500`` and ``csi1000``) and ``synth_truth`` (the latent states, see
    :data:`TRUTH_COLUMNS`); once the ``securities`` master; and ``<root>/synth.json`` (preset,
    seed, configuration, generator version). Deterministic for ``(preset, seed)``: the same
    arguments write byte-identical partitions. Memory is bounded by one day (and, for tick
    tables, one chunk of ``cfg.chunk_stocks`` stocks).

    ``durable=False`` writes without fsync (``Store.durable``, docs/data.md): for a scratch
    market that is regenerated rather than recovered (``fbgpu demo``); the bytes written are
    the same.
    """
    was = store.durable
    store.durable = durable
    try:
        return _generate(store, preset, seed, progress)
    finally:
        store.durable = was


def _generate(store: Store, preset: str | SynthConfig, seed: int,
              progress: bool) -> SynthSummary:
    t0 = time.perf_counter()
    name, cfg = resolve_config(preset)
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    ss = np.random.SeedSequence([seed, 0x5F17])
    uni_ss, day_ss = ss.spawn(2)
    u = build_universe(cfg, np.random.default_rng(uni_ss))
    rng = np.random.default_rng(day_ss)
    chash = config_hash({"preset": name, "seed": seed, "config": cfg.model_dump(mode="json"),
                         "generator": GENERATOR_VERSION})
    summary = SynthSummary(preset=name, seed=seed, root=str(store.root), stocks=u.n_stocks,
                           days=u.n_days, first_date=u.dates[0], last_date=u.dates[-1])
    _write_securities(store, u, chash)
    state = _Day(u, cfg, rng)
    vprof, arr_cdf = _profiles(cfg)
    shared = _shared_params(cfg)
    days = range(u.n_days)
    it = track(days, f"synth {name}") if progress else days
    for d in it:
        counts = _simulate_day(store, u, cfg, state, rng, d, seed, vprof, arr_cdf, shared, chash)
        summary.trades += counts[0]
        summary.orders += counts[1]
        summary.cancels += counts[2]
        summary.stock_days += counts[3]
    summary.tables = ["trades", "orders", "cancels", "minute", "daily", "index_weights",
                      "synth_truth", "securities"]
    meta = {
        "preset": name,
        "seed": seed,
        "generator_version": GENERATOR_VERSION,
        "config": cfg.model_dump(mode="json"),
        "config_hash": chash,
        "first_date": u.dates[0].isoformat(),
        "last_date": u.dates[-1].isoformat(),
        "n_stocks": u.n_stocks,
        "n_days": u.n_days,
        "truth_columns": list(TRUTH_COLUMNS),
    }
    atomic_write_bytes(store.root / SYNTH_JSON, json.dumps(meta, indent=1).encode(),
                       store.durable)
    summary.elapsed_s = time.perf_counter() - t0
    logger.info(summary.line())
    return summary


def _write_securities(store: Store, u: Universe, chash: str) -> None:
    t = pa.table({
        "symbol": pa.array(list(u.symbols), pa.string()),
        "name": pa.array(list(u.names), pa.string()),
        "board": pa.array(list(u.board), pa.string()),
        "list_date": pa.array(u.list_date, pa.date32()),
        "delist_date": pa.nulls(u.n_stocks, pa.date32()),
        "industry": pa.array([u.industry_names[i] for i in u.industry], pa.string()),
        "float_shares": pa.array(u.float_shares, pa.float64()),
    })
    store.write("securities", None, t, config_hash_=chash)


def _simulate_day(store: Store, u: Universe, cfg: SynthConfig, st: _Day,
                  rng: np.random.Generator, d: int, seed: int, vprof: np.ndarray,
                  arr_cdf: np.ndarray, shared: np.ndarray, chash: str) -> tuple[int, int, int, int]:
    date = u.dates[d]
    S = u.n_stocks
    listed = u.list_day <= d
    new = u.list_day == d
    susp = u.suspended[d] & listed & ~new
    active = listed & ~susp
    w_on = cfg.overnight_var_share

    # ---------------------------------------------------------------- draws (fixed order)
    z_eps = rng.standard_normal(S)
    sv_eps = rng.standard_normal(S)
    u_shock = cfg.pressure_vol * rng.standard_normal(S)
    gap_eps = rng.standard_normal(S)
    susp_eps = rng.standard_normal(S)
    act_eps = rng.standard_normal(S)
    jump_u = rng.random(S)
    jump_sign = np.where(rng.random(S) < 0.5, 1.0, -1.0)
    jump_abs = rng.exponential(cfg.jump_size, S)
    jump_tau = rng.uniform(5.0, 230.0, S)
    ipo_eps = rng.standard_normal(S)
    mkt_eps = rng.standard_normal(of.N_CONT_MIN + 1)
    ind_eps = rng.standard_normal((len(u.industry_names), of.N_CONT_MIN + 1))
    # order counts come from a per-day generator (independent of the draws above)
    pois = np.random.default_rng(_splitmix(np.uint64(seed * 1_000_003 + d)))

    # ---------------------------------------------------------------- listings, corporate actions
    if new.any():
        st.pre_c[new] = u.ipo_price_c[new]
        st.logp[new] = (np.log(u.ipo_price_c[new] / 100.0) + cfg.ipo_pop
                        + 0.05 * ipo_eps[new])
        st.adj[new] = 1.0
        st.h_garch[new] = st.h_bar[new]
    ex = listed & ~new & ((u.cash_yield[d] > 0) | (u.bonus_ratio[d] > 0))
    if ex.any():
        old = st.pre_c[ex].astype(np.float64)
        exc = np.round(old * (1.0 - u.cash_yield[d, ex]) / (1.0 + u.bonus_ratio[d, ex]))
        exc = np.maximum(exc, 1).astype(np.int64)
        st.adj[ex] *= old / exc
        st.logp[ex] += np.log(exc / old)
        st.float_shares[ex] *= 1.0 + u.bonus_ratio[d, ex]
        st.pre_c[ex] = exc
    pre_c = st.pre_c.copy()
    st_flag = u.st[d] & listed
    permille = np.where(st_flag, round(ST_LIMIT * 1000), np.round(u.limit_frac * 1000))
    permille = permille.astype(np.int64)
    up_c = _round_half_up_cents(pre_c, 1000 + permille)
    dn_c = np.maximum(_round_half_up_cents(pre_c, 1000 - permille), 1)

    # ---------------------------------------------------------------- latent daily states
    phi = cfg.informed_phi
    st.z_prev = st.z
    st.z = phi * st.z + np.sqrt(1 - phi * phi) * z_eps
    # idiosyncratic variance = GARCH(1,1) (fast clustering) x slow log-normal regime; the
    # GARCH recursion sees shocks with the regime divided out, so both stay stationary
    a, b = cfg.garch_alpha, cfg.garch_beta
    regime_prev = np.exp(2 * st.sv - 2 * cfg.sv_sd**2)
    st.h_garch = (st.h_bar * (1 - a - b) + a * st.eps_prev**2 / regime_prev
                  + b * st.h_garch)
    st.sv = cfg.sv_phi * st.sv + np.sqrt(1 - cfg.sv_phi**2) * cfg.sv_sd * sv_eps
    st.h_idio = st.h_garch * np.exp(2 * st.sv - 2 * cfg.sv_sd**2)
    vol_regime = np.sqrt(st.h_idio / st.h_bar)
    u_shock = u_shock * vol_regime
    pi_prev = st.pi
    st.pi = cfg.pressure_psi * st.pi + u_shock
    st.h_mkt = cfg.market_vol**2 * (1 - a - b) + a * st.mkt_prev**2 + b * st.h_mkt
    # common intraday paths: knot 0 at 09:30, 237 at 14:57; overnight parts separately
    mkt_inc = np.sqrt(st.h_mkt * (1 - w_on) * vprof) * mkt_eps[1:]
    mkt_path = np.concatenate([[0.0], np.cumsum(mkt_inc)])
    mkt_on = np.sqrt(st.h_mkt * w_on) * mkt_eps[0]
    ind_inc = cfg.industry_vol * np.sqrt((1 - w_on) * vprof)[None, :] * ind_eps[:, 1:]
    ind_path = np.concatenate([np.zeros((len(ind_eps), 1)), np.cumsum(ind_inc, axis=1)], axis=1)
    ind_on = cfg.industry_vol * np.sqrt(w_on) * ind_eps[:, 0]
    st.mkt_prev = mkt_on + mkt_path[-1]
    common = u.beta[:, None] * mkt_path[None, :] + ind_path[u.industry]
    gap_idio = np.sqrt(st.h_idio * w_on) * gap_eps
    gap = u.beta * mkt_on + ind_on[u.industry] + gap_idio
    drift = cfg.informed_drift * st.z_prev + (st.pi - pi_prev)
    sigma = np.sqrt(st.h_idio * (1 - w_on))
    has_jump = jump_u < cfg.jump_rate
    jsize = np.where(has_jump, jump_sign * jump_abs, 0.0)
    jsize = np.where(u.forced_jump[d], 0.15, jsize)
    has_jump = has_jump | u.forced_jump[d]
    intensity = np.maximum(st.z, 0) + cfg.informed_sell_ratio * np.maximum(-st.z, 0)
    act = vol_regime * np.exp(0.3 * act_eps - 0.045)
    act = act * np.where(has_jump, 2.0, 1.0)
    lam_un = cfg.orders_per_day * u.activity * act
    n_un = np.minimum(pois.poisson(lam_un), cfg.orders_cap).astype(np.int64)
    n_inf = np.minimum(pois.poisson(cfg.informed_rate * lam_un * intensity),
                       cfg.orders_cap).astype(np.int64)
    p_buy = np.clip(0.5 + cfg.pressure_flow_tilt * u_shock
                    / np.maximum(cfg.pressure_vol * vol_regime, 1e-12),
                    0.2, 0.8)
    lot_med = cfg.notional_median / (pre_c.astype(np.float64))  # cents / (100 shares) = lots

    params = np.zeros((S, of.N_PARAMS))
    params[:, of.P_PRE_CLOSE_C] = pre_c
    params[:, of.P_LIMIT_UP_C] = up_c
    params[:, of.P_LIMIT_DOWN_C] = dn_c
    params[:, of.P_LOGP_OPEN] = st.logp + gap
    params[:, of.P_DRIFT] = drift
    params[:, of.P_SIGMA] = sigma
    params[:, of.P_JUMP_TAU] = np.where(has_jump, jump_tau, np.nan)
    params[:, of.P_JUMP_SIZE] = jsize
    params[:, of.P_N_UNINF] = n_un
    params[:, of.P_N_INF] = n_inf
    params[:, of.P_INF_SIDE] = np.where(st.z >= 0, 1, -1)
    params[:, of.P_P_BUY] = p_buy
    params[:, of.P_LOT_MEDIAN] = lot_med

    # ---------------------------------------------------------------- intraday, chunk by chunk
    act_idx = np.flatnonzero(active)
    dictionary = pa.array(list(u.symbols[act_idx]), pa.string())
    writers = {
        "trades": store.open_writer("trades", date, config_hash_=chash),
        "orders": store.open_writer("orders", date, config_hash_=chash),
        "cancels": store.open_writer("cancels", date, config_hash_=chash),
    }
    A = len(act_idx)
    bars = {k: np.empty((A, MINUTES_PER_DAY), dtype=dt_)
            for k, dt_ in (("open", float), ("high", float), ("low", float), ("close", float),
                           ("amount", float), ("volume", np.int64), ("num_trades", np.int32))}
    stats = np.zeros((A, of.N_STATS))
    seeds_all = (_splitmix(np.uint64(seed) * np.uint64(0x100000001B3)
                           + np.uint64(d) * np.uint64(S) + act_idx.astype(np.uint64))
                 & np.uint64(0xFFFFFFFF)).astype(np.int64)
    totals = [0, 0, 0]
    try:
        for c0 in range(0, A, cfg.chunk_stocks):
            c1 = min(A, c0 + cfg.chunk_stocks)
            idx = act_idx[c0:c1]
            n = n_un[idx] + n_inf[idx]
            tables = _run_chunk(seeds_all[c0:c1], params[idx], shared, common[idx], vprof,
                                arr_cdf, n, stats[c0:c1])
            o_n = stats[c0:c1, of.R_N_ORDERS].astype(np.int64)
            t_n = stats[c0:c1, of.R_N_TRADES].astype(np.int64)
            c_n = stats[c0:c1, of.R_N_CANCELS].astype(np.int64)
            codes = np.arange(c0, c1)
            for tname, cnt, cols, schema in (("orders", o_n, tables[0], ORDERS),
                                             ("trades", t_n, tables[1], TRADES),
                                             ("cancels", c_n, tables[2], CANCELS)):
                nrow = int(cnt.sum())
                arrays = {"date": _date_array(date, nrow),
                          "symbol": _symbol_array(np.repeat(codes, cnt), dictionary)}
                arrays.update(cols)
                writers[tname].write(pa.Table.from_pydict(arrays, schema=schema))
            totals[0] += int(t_n.sum())
            totals[1] += int(o_n.sum())
            totals[2] += int(c_n.sum())
            t_off = np.concatenate([[0], np.cumsum(t_n)])
            tc = tables[1]
            chunk_bars = minute_bars_from_trades(t_off, tc["ts"], tc["price"], tc["volume"],
                                                 tc["amount"], pre_c[idx] / 100.0)
            for k in bars:
                bars[k][c0:c1] = chunk_bars[k]
        for w in writers.values():
            w.close()
    except BaseException:
        for w in writers.values():
            w.abort()
        raise

    # ---------------------------------------------------------------- daily bars and state
    day = daily_from_minute(bars)
    pre = pre_c / 100.0
    close = np.full(S, np.nan)
    close[act_idx] = day["close"]
    no_trade = ~np.isfinite(close)
    close[no_trade] = pre[no_trade]
    logp_close = st.logp.copy()
    logp_close[act_idx] = stats[:, of.R_LOGP_CLOSE]
    # suspended stocks: the efficient price keeps moving, nothing trades
    sus_move = gap + common[:, -1] + drift + sigma * susp_eps
    logp_close[susp] = st.logp[susp] + sus_move[susp]
    idio_real = np.zeros(S)
    idio_real[act_idx] = stats[:, of.R_IDIO]
    idio_real[susp] = (sigma * susp_eps)[susp]
    st.eps_prev = np.where(listed, gap_idio + idio_real, 0.0)
    st.logp = np.where(listed, logp_close, st.logp)
    st.pre_c = np.where(listed, np.round(close * 100).astype(np.int64), st.pre_c)

    _write_minute(store, date, u.symbols[act_idx], bars, chash)
    _write_daily(store, date, u, st, listed, susp, act_idx, day, pre, up_c, dn_c, st_flag,
                 close, chash)
    _write_index_weights(store, u, cfg, st, d, date, listed, susp, st_flag, pre, close, chash)
    inf_share = np.zeros(S)
    with np.errstate(invalid="ignore", divide="ignore"):
        inf_share[act_idx] = (stats[:, of.R_INF_VOLUME]
                              / np.maximum(stats[:, of.R_TOTAL_ORDER_VOLUME], 1))
    truth = {
        "informed_state": st.z,
        "informed_intensity": intensity,
        "expected_drift_next": cfg.informed_drift * st.z,
        "pressure": st.pi,
        "pressure_shock": u_shock,
        "idio_vol": np.sqrt(st.h_idio),
        "efficient_close": np.exp(st.logp),
        "informed_volume_share": np.where(active, inf_share, np.nan),
        "jump": np.where(active, jsize, 0.0),
        "beta": u.beta,
    }
    rows = np.flatnonzero(listed)
    t = pa.table({"date": _date_array(date, len(rows)),
                  "symbol": pa.array(list(u.symbols[rows]), pa.string()),
                  **{k: pa.array(np.asarray(v, dtype=np.float64)[rows]) for k, v in truth.items()}})
    store.write("synth_truth", date, t, config_hash_=chash)
    return totals[0], totals[1], totals[2], A


def _run_chunk(seeds: np.ndarray, params: np.ndarray, shared: np.ndarray, common: np.ndarray,
               vprof: np.ndarray, arr_cdf: np.ndarray, n: np.ndarray, stats: np.ndarray
               ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Simulate a chunk of stocks; return compacted order, trade and cancel columns."""
    o_off = np.concatenate([[0], np.cumsum(n)]).astype(np.int64)
    t_off = np.concatenate([[0], np.cumsum(2 * n + 2)]).astype(np.int64)
    c_off = o_off
    No, Nt = int(o_off[-1]), int(t_off[-1])
    o = {"seq": np.empty(No, np.int64), "ts": np.empty(No, np.int64),
         "price": np.empty(No), "volume": np.empty(No, np.int64),
         "side": np.empty(No, np.int8), "order_type": np.empty(No, np.int8)}
    t = {"seq": np.empty(Nt, np.int64), "ts": np.empty(Nt, np.int64), "price": np.empty(Nt),
         "volume": np.empty(Nt, np.int64), "buy_order_id": np.empty(Nt, np.int64),
         "sell_order_id": np.empty(Nt, np.int64), "side": np.empty(Nt, np.int8)}
    c = {"seq": np.empty(No, np.int64), "ts": np.empty(No, np.int64),
         "order_id": np.empty(No, np.int64), "volume": np.empty(No, np.int64),
         "side": np.empty(No, np.int8)}
    stats_buf = np.zeros_like(stats)
    of.simulate_chunk(
        seeds.astype(np.uint32).astype(np.int64), np.ascontiguousarray(params), shared,
        np.ascontiguousarray(common), vprof, arr_cdf, o_off, t_off, c_off,
        o["seq"], o["ts"], o["price"], o["volume"], o["side"], o["order_type"],
        t["seq"], t["ts"], t["price"], t["volume"], t["buy_order_id"], t["sell_order_id"],
        t["side"],
        c["seq"], c["ts"], c["order_id"], c["volume"], c["side"],
        stats_buf,
    )
    stats[:] = stats_buf

    def pack(cols: dict[str, np.ndarray], off: np.ndarray, cnt: np.ndarray) -> dict:
        dst_off = np.concatenate([[0], np.cumsum(cnt)]).astype(np.int64)
        out = {}
        for k, v in cols.items():
            dst = np.empty(int(dst_off[-1]), dtype=v.dtype)
            of.compact(cnt, off, v, dst_off, dst)
            out[k] = dst
        return out

    o_n = stats[:, of.R_N_ORDERS].astype(np.int64)
    t_n = stats[:, of.R_N_TRADES].astype(np.int64)
    c_n = stats[:, of.R_N_CANCELS].astype(np.int64)
    orders = pack(o, o_off, o_n)
    orders = {"seq": orders["seq"], "ts": orders["ts"], "order_id": orders["seq"].copy(),
              "price": orders["price"], "volume": orders["volume"], "side": orders["side"],
              "order_type": orders["order_type"]}
    trades = pack(t, t_off, t_n)
    trades["amount"] = trades["price"] * trades["volume"]
    trades = {k: trades[k] for k in ("seq", "ts", "price", "volume", "amount", "buy_order_id",
                                     "sell_order_id", "side")}
    cancels = pack(c, c_off, c_n)
    return orders, trades, cancels


def _write_minute(store: Store, date: dt.date, symbols: np.ndarray,
                  bars: dict[str, np.ndarray], chash: str) -> None:
    A = len(symbols)
    n = A * MINUTES_PER_DAY
    dictionary = pa.array(list(symbols), pa.string())
    cols = {"date": _date_array(date, n),
            "symbol": _symbol_array(np.repeat(np.arange(A), MINUTES_PER_DAY), dictionary),
            "minute": pa.array(np.tile(np.arange(MINUTES_PER_DAY, dtype=np.int16), A))}
    for k in ("open", "high", "low", "close", "volume", "amount", "num_trades"):
        cols[k] = pa.array(bars[k].reshape(-1))
    store.write("minute", date, pa.table(cols), config_hash_=chash)


def _write_daily(store: Store, date: dt.date, u: Universe, st: _Day, listed: np.ndarray,
                 susp: np.ndarray, act_idx: np.ndarray, day: dict[str, np.ndarray],
                 pre: np.ndarray, up_c: np.ndarray, dn_c: np.ndarray, st_flag: np.ndarray,
                 close: np.ndarray, chash: str) -> None:
    S = u.n_stocks
    cols: dict[str, np.ndarray] = {}
    for k in ("open", "high", "low", "vwap"):
        v = np.full(S, np.nan)
        v[act_idx] = day[k]
        bad = ~np.isfinite(v)
        v[bad] = close[bad]  # no trade (suspended): every price is the previous close
        cols[k] = v
    cols["close"] = close
    vol = np.zeros(S, np.int64)
    vol[act_idx] = day["volume"]
    amt = np.zeros(S)
    amt[act_idx] = day["amount"]
    rows = np.flatnonzero(listed)
    t = pa.table({
        "date": _date_array(date, len(rows)),
        "symbol": pa.array(list(u.symbols[rows]), pa.string()),
        "open": cols["open"][rows], "high": cols["high"][rows], "low": cols["low"][rows],
        "close": close[rows], "pre_close": pre[rows], "vwap": cols["vwap"][rows],
        "volume": vol[rows], "amount": amt[rows], "adj_factor": st.adj[rows],
        "limit_up": up_c[rows] / 100.0, "limit_down": dn_c[rows] / 100.0,
        "suspended": susp[rows], "st": st_flag[rows],
        "float_cap": (st.float_shares * close)[rows],
        "industry": pa.array([u.industry_names[i] for i in u.industry[rows]], pa.string()),
    })
    store.write("daily", date, t, config_hash_=chash)


def _write_index_weights(store: Store, u: Universe, cfg: SynthConfig, st: _Day, d: int,
                         date: dt.date, listed: np.ndarray, susp: np.ndarray,
                         st_flag: np.ndarray, pre: np.ndarray, close: np.ndarray,
                         chash: str) -> None:
    """CSI-like indices: members re-ranked by float cap at the open of rebalance days."""
    rebalance = d == 0 or (date.month in cfg.rebalance_months
                           and u.dates[d - 1].month != date.month)
    if rebalance:
        eligible = (listed & ~susp & ~st_flag
                    & (u.list_day <= d - cfg.index_min_listed_days))
        cap_open = st.float_shares * pre  # known before the open: previous close x shares
        elig = np.flatnonzero(eligible)
        ranked = elig[np.argsort(-cap_open[elig], kind="stable")]
        E = len(ranked)
        st.members = {}
        for name, (lo, hi) in cfg.index_bands.items():
            st.members[name] = np.sort(ranked[int(np.floor(lo * E)): int(np.floor(hi * E))])
    idx_col: list[str] = []
    sym_col: list[str] = []
    w_col: list[np.ndarray] = []
    for name, mem in st.members.items():
        if len(mem) == 0:
            continue
        cap = st.float_shares[mem] * close[mem]
        idx_col += [name] * len(mem)
        sym_col += list(u.symbols[mem])
        w_col.append(cap / cap.sum())
    t = pa.table({
        "date": _date_array(date, len(sym_col)),
        "index": pa.array(idx_col, pa.string()),
        "symbol": pa.array(sym_col, pa.string()),
        "weight": np.concatenate(w_col) if w_col else np.zeros(0),
    })
    store.write("index_weights", date, t, config_hash_=chash)
