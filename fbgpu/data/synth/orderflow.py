"""The intraday engine: one stock-day of order flow through a limit order book (numba).

For each stock-day the engine draws order arrivals, prices and sizes around a latent *efficient
price* path, runs them through a price-time-priority limit order book with a 0.01 CNY tick, and
emits the three tick tables (orders, trades, cancels) with one shared sequence counter.

Time axis ``tau`` (minutes): ``[-15, -5)`` opening call auction 09:15-09:25; ``[0, 237)``
continuous trading (0 = 09:30, 120 = 13:00); ``[237, 240)`` closing call auction 14:57-15:00.

Phases:

* **Opening call auction**: limit orders only, priced ``N(P*, auction_disp)``, collected without
  matching; cancels allowed until 09:20. At 09:25 the book is uncrossed at the single price that
  maximises matched volume (ties: smallest imbalance, then closest to the previous close); those
  trades print at 09:25:00.000 with ``side = 0``.
* **Continuous trading**: every order is matched on arrival against the opposite side (price-time
  priority); the remainder of a limit order rests, the remainder of a market order is cancelled
  (immediate-or-cancel, recorded in ``cancels``). Trades carry the aggressor side (+1 buy, -1 sell).
* **Closing call auction**: limit orders collected from 14:57, the whole book uncrossed at 15:00
  (prints at 15:00:00.000, ``side = 0``, ties broken towards the last traded price).

Price limits: a buy priced above ``limit_up`` is entered at ``limit_up`` (queueing at the limit),
a sell priced below ``limit_down`` at ``limit_down``; an order priced outside the band on the
other side (a sell above ``limit_up``, a buy below ``limit_down``) is rejected by the exchange and
never appears. So no order rests and no trade prints outside the band.

Every order that reaches the book, marketable or not, is published in ``orders`` (real SSE data
publishes only the resting remainder of an order; SZSE publishes every order, like this engine).
"""

from __future__ import annotations

import numba as nb
import numpy as np

from fbgpu.data.bars import T_0915, T_0925, T_0930, T_1300, T_1500

# Indices into the per-stock parameter vector ``params[s, :]`` (float64).
P_PRE_CLOSE_C = 0  # previous close, integer cents
P_LIMIT_UP_C = 1
P_LIMIT_DOWN_C = 2
P_LOGP_OPEN = 3  # efficient log price at 09:15 (after the overnight gap)
P_DRIFT = 4  # intraday efficient drift over the continuous session (log)
P_SIGMA = 5  # idiosyncratic continuous-session volatility (log, per day)
P_JUMP_TAU = 6  # tau of a news jump (NaN: none)
P_JUMP_SIZE = 7
P_N_UNINF = 8
P_N_INF = 9
P_INF_SIDE = 10  # +1 / -1
P_P_BUY = 11  # uninformed buy probability
P_LOT_MEDIAN = 12  # median uninformed order size, lots (real-valued)
N_PARAMS = 13

# Indices into the shared float parameters ``shared`` (same for every stock of a run).
S_LOT_LOG_SD = 0
S_TAIL_PROB = 1
S_TAIL_ALPHA = 2
S_INF_SIZE_MULT = 3
S_INF_DECAY = 4
S_INF_MARKETABLE = 5
S_INF_ACCURACY = 6
S_MARKETABLE = 7
S_MARKET_ORDER = 8
S_CANCEL_PROB = 9
S_CANCEL_MEAN = 10
S_DEPTH_BP = 11
S_SLIPPAGE_BP = 12
S_AUCTION_DISP_BP = 13
S_OPEN_SHARE = 14
S_CLOSE_SHARE = 15
S_INF_SLIPPAGE_BP = 16
S_INF_CANCEL_MEAN = 17
N_SHARED = 18

# Per stock-day outputs ``stats[s, :]``.
R_N_ORDERS = 0
R_N_TRADES = 1
R_N_CANCELS = 2
R_IDIO = 3  # realised idiosyncratic Brownian log move over the session
R_LOGP_CLOSE = 4  # efficient log price at 15:00
R_N_REJECTED = 5
R_INF_VOLUME = 6  # shares in informed orders
R_TOTAL_ORDER_VOLUME = 7
N_STATS = 8

ORDER_LIMIT = 0
ORDER_MARKET = 1

TAU_OPEN_START = -15.0
TAU_OPEN_END = -5.0
TAU_OPEN_NO_CANCEL = -10.0  # 09:20: no cancels in the last 5 minutes of the opening auction
TAU_CONT_END = 237.0
TAU_CLOSE_END = 240.0
N_CONT_MIN = 237


@nb.njit(cache=True, inline="always")
def tau_to_ns(tau: float) -> int:
    """Exchange time (ns since midnight, millisecond resolution) of a session time ``tau``."""
    if tau < 0.0:
        ms = np.floor((tau + 15.0) * 60_000.0)
        return T_0915 + np.int64(ms) * 1_000_000
    if tau < 120.0:
        ms = np.floor(tau * 60_000.0)
        return T_0930 + np.int64(ms) * 1_000_000
    ms = np.floor((tau - 120.0) * 60_000.0)
    t = T_1300 + np.int64(ms) * 1_000_000
    return min(t, T_1500 - 1_000_000)


@nb.njit(cache=True, inline="always")
def _lot_size(median_lots: float, log_sd: float, tail_prob: float, tail_alpha: float,
              mult: float) -> int:
    """Order size in lots: log-normal body, Pareto tail above the body's 95th percentile."""
    if np.random.random() < tail_prob:
        xm = median_lots * np.exp(1.645 * log_sd)
        x = xm * (1.0 - np.random.random()) ** (-1.0 / tail_alpha)
    else:
        x = median_lots * np.exp(log_sd * np.random.standard_normal())
    lots = np.int64(np.ceil(x * mult))
    if lots < 1:
        lots = 1
    if lots > 1_000_000:
        lots = 1_000_000
    return lots


@nb.njit(cache=True)
def simulate_stock_day(
    seed, p, shared, common, vprof, arr_cdf,
    o_seq, o_ts, o_price, o_vol, o_side, o_type,
    t_seq, t_ts, t_price, t_vol, t_buy, t_sell, t_side,
    c_seq, c_ts, c_oid, c_vol, c_side,
    stats,
):
    """Simulate one stock-day; write rows into the given output slices; fill ``stats``.

    ``common`` is the stock's common-factor log path at the 238 knots tau = 0..237 (starting at
    0), ``vprof`` the share of the day's idiosyncratic variance in each continuous minute (sums to
    1), ``arr_cdf`` the cumulative uninformed arrival distribution over the 237 continuous
    minutes. Output capacities: orders n, trades 2n, cancels n, with n = uninformed + informed.
    """
    np.random.seed(seed)
    pre_c = np.int64(p[P_PRE_CLOSE_C])
    up_c = np.int64(p[P_LIMIT_UP_C])
    dn_c = np.int64(p[P_LIMIT_DOWN_C])
    L = up_c - dn_c + 1
    n_un = np.int64(p[P_N_UNINF])
    n_inf = np.int64(p[P_N_INF])
    n = n_un + n_inf
    inf_side = np.int64(p[P_INF_SIDE])
    p_buy = p[P_P_BUY]
    lot_med = p[P_LOT_MEDIAN]
    lot_sd = shared[S_LOT_LOG_SD]
    tail_p = shared[S_TAIL_PROB]
    tail_a = shared[S_TAIL_ALPHA]

    # ---------------------------------------------------------------- arrivals and cancels
    arr_tau = np.empty(n)
    informed = np.zeros(n, dtype=np.bool_)
    n_open = np.random.binomial(n_un, shared[S_OPEN_SHARE]) if n_un > 0 else 0
    rest = n_un - n_open
    close_p = shared[S_CLOSE_SHARE] / (1.0 - shared[S_OPEN_SHARE])
    n_close = np.random.binomial(rest, min(close_p, 1.0)) if rest > 0 else 0
    for j in range(n_un):
        if j < n_open:
            arr_tau[j] = TAU_OPEN_START + 10.0 * np.random.random()
        elif j < n_open + n_close:
            arr_tau[j] = TAU_CONT_END + 3.0 * np.random.random()
        else:
            k = np.searchsorted(arr_cdf, np.random.random() * arr_cdf[-1], side="right")
            if k >= N_CONT_MIN:
                k = N_CONT_MIN - 1
            arr_tau[j] = k + np.random.random()
    decay = shared[S_INF_DECAY]
    norm = 1.0 - np.exp(-TAU_CONT_END / decay)
    for j in range(n_un, n):
        informed[j] = True
        arr_tau[j] = -decay * np.log(1.0 - np.random.random() * norm)
        if arr_tau[j] >= TAU_CONT_END:
            arr_tau[j] = TAU_CONT_END - 1e-6
    # Candidate cancel time per order slot (used only if the order is resting then).
    cxl_tau = np.full(n, np.inf)
    n_ev = n
    for j in range(n):
        if informed[j]:
            # informed traders sweep and pull what did not fill almost at once
            tc = arr_tau[j] + np.random.exponential(shared[S_INF_CANCEL_MEAN])
            if tc < TAU_CONT_END:
                cxl_tau[j] = tc
                n_ev += 1
        elif np.random.random() < shared[S_CANCEL_PROB]:
            tc = arr_tau[j] + np.random.exponential(shared[S_CANCEL_MEAN])
            if TAU_OPEN_NO_CANCEL <= tc < 0.0:
                tc += 10.0  # no cancels 09:20-09:25; they arrive once trading opens
            if tc < TAU_CONT_END:
                cxl_tau[j] = tc
                n_ev += 1
    ev_tau = np.empty(n_ev)
    ev_ref = np.empty(n_ev, dtype=np.int64)  # j >= 0: arrival of slot j; -(j+1): cancel of j
    e = 0
    for j in range(n):
        ev_tau[e] = arr_tau[j]
        ev_ref[e] = j
        e += 1
        if cxl_tau[j] < np.inf:
            ev_tau[e] = cxl_tau[j]
            ev_ref[e] = -(j + 1)
            e += 1
    order = np.argsort(ev_tau, kind="mergesort")

    # ---------------------------------------------------------------- book state
    rem = np.zeros(n, dtype=np.int64)  # live remaining shares of slot j
    lvl = np.full(n, -1, dtype=np.int64)
    nxt = np.full(n, -1, dtype=np.int64)
    side_of = np.zeros(n, dtype=np.int64)
    oid = np.full(n, -1, dtype=np.int64)
    bid_head = np.full(L, -1, dtype=np.int64)
    bid_tail = np.full(L, -1, dtype=np.int64)
    ask_head = np.full(L, -1, dtype=np.int64)
    ask_tail = np.full(L, -1, dtype=np.int64)
    bid_vol = np.zeros(L, dtype=np.int64)
    ask_vol = np.zeros(L, dtype=np.int64)
    best_bid = -1
    best_ask = L

    seq = 0
    no = 0
    nt = 0
    nc = 0
    n_rej = 0
    inf_vol = 0
    tot_vol = 0
    last_trade_lvl = pre_c - dn_c

    # efficient price state
    logp0 = p[P_LOGP_OPEN]
    drift = p[P_DRIFT]
    sigma = p[P_SIGMA]
    jump_tau = p[P_JUMP_TAU]
    jump_size = p[P_JUMP_SIZE]
    idio = 0.0
    tau_last = 0.0
    opened = False
    depth_bp = shared[S_DEPTH_BP]
    slip_bp = shared[S_SLIPPAGE_BP]
    disp_bp = shared[S_AUCTION_DISP_BP]

    for ei in range(n_ev + 1):
        if ei < n_ev:
            ev = order[ei]
            tau = ev_tau[ev]
            ref = ev_ref[ev]
        else:
            tau = TAU_CLOSE_END
            ref = -(n + 1)  # sentinel: end of day
        # ---- opening uncross when continuous trading starts
        if not opened and tau >= 0.0:
            opened = True
            ts_auct = T_0925
            nt, seq, last_trade_lvl = _uncross(
                ts_auct, pre_c - dn_c, dn_c, L, rem, nxt, oid, bid_head, bid_tail, ask_head,
                ask_tail, bid_vol, ask_vol, t_seq, t_ts, t_price, t_vol, t_buy, t_sell, t_side,
                nt, seq, last_trade_lvl)
            best_bid = L - 1
            while best_bid >= 0 and bid_vol[best_bid] == 0:
                best_bid -= 1
            best_ask = 0
            while best_ask < L and ask_vol[best_ask] == 0:
                best_ask += 1
        if ref == -(n + 1):
            break
        # ---- efficient price at tau (continuous session only; frozen in auctions)
        if 0.0 <= tau < TAU_CONT_END and tau > tau_last:
            k = int(tau_last)
            idio += sigma * np.sqrt(vprof[k] * (tau - tau_last)) * np.random.standard_normal()
            tau_last = tau
        if tau < 0.0:
            tc = 0.0
        elif tau < TAU_CONT_END:
            tc = tau
        else:
            tc = TAU_CONT_END
        kk = int(tc)
        if kk >= N_CONT_MIN:
            cpath = common[N_CONT_MIN]
        else:
            w = tc - kk
            cpath = common[kk] * (1.0 - w) + common[kk + 1] * w
        logp = logp0 + cpath + drift * tc / TAU_CONT_END + idio
        if jump_tau == jump_tau and tc >= jump_tau:
            logp += jump_size
        ref_lvl = np.exp(logp) * 100.0 - dn_c  # efficient price in levels (cents above floor)
        ts = tau_to_ns(tau)

        if ref < 0:
            # ---- cancel event
            j = -ref - 1
            if rem[j] > 0:
                lj = lvl[j]
                if side_of[j] > 0:
                    bid_vol[lj] -= rem[j]
                else:
                    ask_vol[lj] -= rem[j]
                c_seq[nc] = seq
                c_ts[nc] = ts
                c_oid[nc] = oid[j]
                c_vol[nc] = rem[j]
                c_side[nc] = side_of[j]
                nc += 1
                seq += 1
                rem[j] = 0
                while best_bid >= 0 and bid_vol[best_bid] == 0:
                    best_bid -= 1
                while best_ask < L and ask_vol[best_ask] == 0:
                    best_ask += 1
            continue

        # ---- new order in slot j
        j = ref
        is_inf = informed[j]
        if is_inf:
            side = inf_side if np.random.random() < shared[S_INF_ACCURACY] else -inf_side
            lots = _lot_size(lot_med, lot_sd, tail_p * 2.0, tail_a, shared[S_INF_SIZE_MULT])
        else:
            side = 1 if np.random.random() < p_buy else -1
            lots = _lot_size(lot_med, lot_sd, tail_p, tail_a, 1.0)
        vol = lots * 100
        otype = ORDER_LIMIT
        auction = tau < 0.0 or tau >= TAU_CONT_END
        tick_bp = 1e4 / max(ref_lvl + dn_c, 1.0)  # one tick in bp of the price
        if auction:
            dev = disp_bp * np.random.standard_normal() / tick_bp
            # buyers lean up, sellers down, so that the auction crosses
            pl = np.int64(np.round(ref_lvl + side * 0.3 * disp_bp / tick_bp + dev))
        else:
            marketable = np.random.random() < (
                shared[S_INF_MARKETABLE] if is_inf else shared[S_MARKETABLE])
            if marketable:
                # a marketable order may sweep the book up to a slippage cap beyond the
                # efficient price; if the touch is already beyond the cap it rests there
                reach = shared[S_INF_SLIPPAGE_BP] if is_inf else slip_bp
                slip = np.int64(np.ceil(reach / tick_bp * np.random.random()))
                if side > 0:
                    pl = np.int64(np.ceil(ref_lvl)) + slip
                else:
                    pl = np.int64(np.floor(ref_lvl)) - slip
                if np.random.random() < shared[S_MARKET_ORDER]:
                    otype = ORDER_MARKET
            else:
                dist = np.random.exponential(max(depth_bp / tick_bp, 1.0))
                if is_inf:
                    dist = 0.0  # informed passive orders join the touch
                if side > 0:
                    pl = np.int64(np.floor(ref_lvl - 0.5 - dist))
                else:
                    pl = np.int64(np.ceil(ref_lvl + 0.5 + dist))
        # price band: queue at the limit on the aggressive side, reject on the other
        if otype == ORDER_MARKET:
            pl = L - 1 if side > 0 else 0
        elif side > 0:
            if pl < 0:
                n_rej += 1
                continue
            pl = min(pl, L - 1)
        else:
            if pl > L - 1:
                n_rej += 1
                continue
            pl = max(pl, 0)
        my_id = seq
        seq += 1
        o_seq[no] = my_id
        o_ts[no] = ts
        o_price[no] = np.nan if otype == ORDER_MARKET else (dn_c + pl) / 100.0
        o_vol[no] = vol
        o_side[no] = side
        o_type[no] = otype
        no += 1
        oid[j] = my_id
        side_of[j] = side
        tot_vol += vol
        if is_inf:
            inf_vol += vol
        left = vol
        if not auction:
            # ---- continuous matching
            if side > 0:
                while left > 0 and best_ask < L and best_ask <= pl:
                    h = ask_head[best_ask]
                    while rem[h] == 0:
                        h = nxt[h]
                    ask_head[best_ask] = h
                    q = min(left, rem[h])
                    t_seq[nt] = seq
                    t_ts[nt] = ts
                    t_price[nt] = (dn_c + best_ask) / 100.0
                    t_vol[nt] = q
                    t_buy[nt] = my_id
                    t_sell[nt] = oid[h]
                    t_side[nt] = 1
                    nt += 1
                    seq += 1
                    last_trade_lvl = best_ask
                    left -= q
                    rem[h] -= q
                    ask_vol[best_ask] -= q
                    if ask_vol[best_ask] == 0:
                        ask_head[best_ask] = -1
                        ask_tail[best_ask] = -1
                        while best_ask < L and ask_vol[best_ask] == 0:
                            best_ask += 1
            else:
                while left > 0 and best_bid >= 0 and best_bid >= pl:
                    h = bid_head[best_bid]
                    while rem[h] == 0:
                        h = nxt[h]
                    bid_head[best_bid] = h
                    q = min(left, rem[h])
                    t_seq[nt] = seq
                    t_ts[nt] = ts
                    t_price[nt] = (dn_c + best_bid) / 100.0
                    t_vol[nt] = q
                    t_buy[nt] = oid[h]
                    t_sell[nt] = my_id
                    t_side[nt] = -1
                    nt += 1
                    seq += 1
                    last_trade_lvl = best_bid
                    left -= q
                    rem[h] -= q
                    bid_vol[best_bid] -= q
                    if bid_vol[best_bid] == 0:
                        bid_head[best_bid] = -1
                        bid_tail[best_bid] = -1
                        while best_bid >= 0 and bid_vol[best_bid] == 0:
                            best_bid -= 1
            if left > 0 and otype == ORDER_MARKET:
                c_seq[nc] = seq
                c_ts[nc] = ts
                c_oid[nc] = my_id
                c_vol[nc] = left
                c_side[nc] = side
                nc += 1
                seq += 1
                left = 0
        if left > 0:
            # ---- rest in the book (FIFO at its level)
            rem[j] = left
            lvl[j] = pl
            if side > 0:
                if bid_tail[pl] >= 0:
                    nxt[bid_tail[pl]] = j
                else:
                    bid_head[pl] = j
                bid_tail[pl] = j
                bid_vol[pl] += left
                if not auction and pl > best_bid:
                    best_bid = pl
            else:
                if ask_tail[pl] >= 0:
                    nxt[ask_tail[pl]] = j
                else:
                    ask_head[pl] = j
                ask_tail[pl] = j
                ask_vol[pl] += left
                if not auction and pl < best_ask:
                    best_ask = pl

    # ---------------------------------------------------------------- closing auction at 15:00
    nt, seq, last_trade_lvl = _uncross(
        T_1500, last_trade_lvl, dn_c, L, rem, nxt, oid, bid_head, bid_tail, ask_head, ask_tail,
        bid_vol, ask_vol, t_seq, t_ts, t_price, t_vol, t_buy, t_sell, t_side, nt, seq,
        last_trade_lvl)
    if tau_last < TAU_CONT_END:
        k = int(tau_last)
        rest_var = 0.0
        rest_var += vprof[k] * (k + 1 - tau_last)
        for m in range(k + 1, N_CONT_MIN):
            rest_var += vprof[m]
        idio += sigma * np.sqrt(rest_var) * np.random.standard_normal()
    logp_close = logp0 + common[N_CONT_MIN] + drift + idio
    if jump_tau == jump_tau:
        logp_close += jump_size
    stats[R_N_ORDERS] = no
    stats[R_N_TRADES] = nt
    stats[R_N_CANCELS] = nc
    stats[R_IDIO] = idio
    stats[R_LOGP_CLOSE] = logp_close
    stats[R_N_REJECTED] = n_rej
    stats[R_INF_VOLUME] = inf_vol
    stats[R_TOTAL_ORDER_VOLUME] = tot_vol


@nb.njit(cache=True, inline="always")
def _next_live(h, rem, nxt):
    while h >= 0 and rem[h] == 0:
        h = nxt[h]
    return h


@nb.njit(cache=True)
def _uncross(ts, ref_lvl, dn_c, L, rem, nxt, oid, bid_head, bid_tail, ask_head, ask_tail,
             bid_vol, ask_vol, t_seq, t_ts, t_price, t_vol, t_buy, t_sell, t_side, nt, seq,
             last_lvl):
    """Call-auction uncross at one price; returns (trades written, next seq, last level).

    The price maximises matched volume min(D(l), S(l)) where D(l) = bid volume at >= l and
    S(l) = ask volume at <= l; ties go to the smallest |D - S|, then to the level closest to
    ``ref_lvl``. Orders are filled in price-time priority at that single price.
    """
    D = np.zeros(L + 1, dtype=np.int64)
    for l in range(L - 1, -1, -1):
        D[l] = D[l + 1] + bid_vol[l]
    best_l = -1
    best_m = 0
    best_imb = 0
    S = 0
    for l in range(L):
        S += ask_vol[l]
        m = min(D[l], S)
        if m <= 0:
            continue
        imb = abs(D[l] - S)
        if (m > best_m or (m == best_m and imb < best_imb)
                or (m == best_m and imb == best_imb
                    and abs(l - ref_lvl) < abs(best_l - ref_lvl))):
            best_l = l
            best_m = m
            best_imb = imb
    if best_l < 0:
        return nt, seq, last_lvl
    left = best_m
    bl = L - 1
    al = 0
    bh = -1
    ah = -1
    price = (dn_c + best_l) / 100.0
    while left > 0:
        # highest-priority live bid: continue down the current queue, else the next level
        if bh < 0 or rem[bh] == 0:
            if bh >= 0 and bid_vol[bl] > 0:
                bh = _next_live(nxt[bh], rem, nxt)
            else:
                while bid_vol[bl] == 0:
                    bl -= 1
                bh = _next_live(bid_head[bl], rem, nxt)
        if ah < 0 or rem[ah] == 0:
            if ah >= 0 and ask_vol[al] > 0:
                ah = _next_live(nxt[ah], rem, nxt)
            else:
                while ask_vol[al] == 0:
                    al += 1
                ah = _next_live(ask_head[al], rem, nxt)
        q = min(left, rem[bh], rem[ah])
        t_seq[nt] = seq
        t_ts[nt] = ts
        t_price[nt] = price
        t_vol[nt] = q
        t_buy[nt] = oid[bh]
        t_sell[nt] = oid[ah]
        t_side[nt] = 0
        nt += 1
        seq += 1
        rem[bh] -= q
        rem[ah] -= q
        bid_vol[bl] -= q
        ask_vol[al] -= q
        left -= q
    # drop filled orders from the queue heads; an emptied level forgets its tail
    for l in range(L):
        bid_head[l] = _next_live(bid_head[l], rem, nxt)
        if bid_head[l] < 0:
            bid_tail[l] = -1
        ask_head[l] = _next_live(ask_head[l], rem, nxt)
        if ask_head[l] < 0:
            ask_tail[l] = -1
    return nt, seq, best_l


@nb.njit(cache=True, parallel=True)
def simulate_chunk(
    seeds, params, shared, common, vprof, arr_cdf,
    o_off, t_off, c_off,
    o_seq, o_ts, o_price, o_vol, o_side, o_type,
    t_seq, t_ts, t_price, t_vol, t_buy, t_sell, t_side,
    c_seq, c_ts, c_oid, c_vol, c_side,
    stats,
):
    """Simulate every stock-day of a chunk in parallel into capacity-offset buffers.

    Stock ``s`` writes orders at ``o_off[s]:``, trades at ``t_off[s]:``, cancels at
    ``c_off[s]:``; ``stats[s]`` receives its counts. Each stock-day seeds its own generator, so
    results do not depend on threads or chunking.
    """
    S = seeds.shape[0]
    for s in nb.prange(S):
        o0, o1 = o_off[s], o_off[s + 1]
        t0, t1 = t_off[s], t_off[s + 1]
        c0, c1 = c_off[s], c_off[s + 1]
        simulate_stock_day(
            seeds[s], params[s], shared, common[s], vprof, arr_cdf,
            o_seq[o0:o1], o_ts[o0:o1], o_price[o0:o1], o_vol[o0:o1], o_side[o0:o1],
            o_type[o0:o1],
            t_seq[t0:t1], t_ts[t0:t1], t_price[t0:t1], t_vol[t0:t1], t_buy[t0:t1],
            t_sell[t0:t1], t_side[t0:t1],
            c_seq[c0:c1], c_ts[c0:c1], c_oid[c0:c1], c_vol[c0:c1], c_side[c0:c1],
            stats[s],
        )


@nb.njit(cache=True)
def compact(counts, off, src, dst_off, dst):
    """Copy ``counts[s]`` rows of stock ``s`` from ``src[off[s]:]`` to ``dst[dst_off[s]:]``."""
    for s in range(counts.shape[0]):
        a = off[s]
        b = dst_off[s]
        for i in range(counts[s]):
            dst[b + i] = src[a + i]

