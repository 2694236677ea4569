// Gavel bidder page: the auction list (GET /v1/auctions) and one live auction over the
// WebSocket protocol v1 (/v1/ws). Plain module, no dependencies, no build step.
//
// Amounts are integers in the currency's minor unit on the wire; the page shows and reads
// them in major units with the currency's own number of minor digits (Intl.NumberFormat).
// Live state: every event carries the auction's `seq`; the page applies an event only if
// it is the next one, ignores ones it has seen, and resubscribes with `since` when it sees
// a gap or reconnects, so the feed has no gap and no duplicate. A `reset` (the server
// restored the auction's live state from its record) discards the seq tracking; the
// snapshot that follows is rendered as the new truth.

const $ = (id) => document.getElementById(id);
const TOKEN_KEY = "gavel.token";
const NAME_KEY = "gavel.name";
const OIDC_KEY = "gavel.oidc";   // {refresh, expiresAt}: the provider's refresh token
const PKCE_KEY = "gavel.pkce";   // {verifier, state, back}: during the sign-in round trip
const FEED_LIMIT = 200;
const BACKFILL = 50;

// ---------------------------------------------------------------- money and time

const digitsCache = new Map();

/** Minor digits of an ISO 4217 currency (2 for USD, 0 for JPY, 3 for KWD). */
export function minorDigits(currency) {
  if (!digitsCache.has(currency)) {
    let d = 2;
    try {
      d = new Intl.NumberFormat("en", { style: "currency", currency }).resolvedOptions()
        .maximumFractionDigits;
    } catch (_) { /* unknown code: assume cents */ }
    digitsCache.set(currency, d);
  }
  return digitsCache.get(currency);
}

/** "1234" minor units of USD -> "12.34" (exact: string arithmetic, no floats). */
export function plainAmount(minor, currency) {
  const d = minorDigits(currency);
  const s = String(Math.abs(minor));
  const sign = minor < 0 ? "-" : "";
  if (d === 0) return sign + s;
  const padded = s.padStart(d + 1, "0");
  return `${sign}${padded.slice(0, -d)}.${padded.slice(-d)}`;
}

/** Minor units -> "$12.34" in the reader's locale. */
export function money(minor, currency) {
  if (minor === null || minor === undefined || !currency) return "—";
  const d = minorDigits(currency);
  const text = plainAmount(minor, currency);
  try {
    return new Intl.NumberFormat(undefined, {
      style: "currency", currency, minimumFractionDigits: d, maximumFractionDigits: d,
    }).format(text);
  } catch (_) {
    return `${text} ${currency}`;
  }
}

/** What a bidder typed ("105", "105.5", "1,050.00", "105,50") -> minor units, or an error. */
export function parseAmount(input, currency) {
  const d = minorDigits(currency);
  let t = String(input).trim().replace(/[\s\u00a0'_]/g, "");
  if (t.includes(".") && t.includes(",")) t = t.replace(/,/g, "");
  const m = t.match(/^(\d+)(?:[.,](\d*))?$/);
  if (!m) return { error: `Type an amount in ${currency}, for example ${plainAmount(10 ** d * 105, currency)}.` };
  const frac = m[2] || "";
  if (frac.length > d) {
    return { error: d === 0 ? `${currency} has no minor unit: type a whole amount.`
                            : `${currency} has ${d} decimals at most.` };
  }
  const value = BigInt(m[1]) * 10n ** BigInt(d) + BigInt(frac.padEnd(d, "0") || "0");
  if (value < 1n || value > 10n ** 15n) return { error: "That amount is out of range." };
  return { value: Number(value) };
}

function clockTime(ms) {
  const date = new Date(ms);
  const sameDay = new Date().toDateString() === date.toDateString();
  const opts = sameDay ? { hour: "2-digit", minute: "2-digit", second: "2-digit" }
                       : { dateStyle: "medium", timeStyle: "medium" };
  return new Intl.DateTimeFormat(undefined, opts).format(date);
}

/** 93784000 -> "1d 2h 3m 4s"; 64000 -> "1m 04s"; 9000 -> "9s". */
export function duration(ms) {
  let s = Math.max(0, Math.ceil(ms / 1000));
  const d = Math.floor(s / 86400); s -= d * 86400;
  const h = Math.floor(s / 3600); s -= h * 3600;
  const m = Math.floor(s / 60); s -= m * 60;
  const ss = String(s).padStart(2, "0");
  if (d > 0) return `${d}d ${h}h ${m}m`;
  if (h > 0) return `${h}h ${String(m).padStart(2, "0")}m ${ss}s`;
  if (m > 0) return `${m}m ${ss}s`;
  return `${s}s`;
}

// ---------------------------------------------------------------- identity

const identity = {
  devAuth: false,
  get token() { return sessionStorage.getItem(TOKEN_KEY) || ""; },
  get name() { return sessionStorage.getItem(NAME_KEY) || ""; },
  /** The display name others see for this bidder, as far as the page can tell. */
  get displayName() {
    if (this.token) {
      try {
        const part = this.token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
        const claims = JSON.parse(atob(part));
        return claims.name || claims.sub || null;
      } catch (_) { return null; }
    }
    return this.devAuth && this.name ? this.name : null;
  },
  get signedIn() { return Boolean(this.token || (this.devAuth && this.name)); },
};

// ---------------------------------------------------------------- sign-in with the provider

/** Signing in with the identity provider (OpenID Connect authorization code with PKCE, a
 * public client: no secret). Tokens stay in this tab's session storage; the access token
 * is refreshed before it expires and handed to the live connection (`refresh` frame). */
const oidc = {
  config: null,      // {issuer, client_id, scope, resource} from /v1/config
  meta: null,        // the provider's discovery document
  timer: null,
  onToken: () => {},

  async discover() {
    if (!this.meta) {
      const res = await fetch(`${this.config.issuer.replace(/\/$/, "")}/.well-known/openid-configuration`);
      if (!res.ok) throw new Error(`the identity provider answered ${res.status}`);
      this.meta = await res.json();
    }
    return this.meta;
  },

  redirectUri() { return `${location.origin}/auth/callback`; },

  async signIn() {
    const meta = await this.discover();
    const verifier = randomString(32);
    const state = randomString(16);
    const challenge = b64url(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier)));
    sessionStorage.setItem(PKCE_KEY, JSON.stringify({ verifier, state, back: location.pathname }));
    const q = new URLSearchParams({
      response_type: "code", client_id: this.config.client_id, redirect_uri: this.redirectUri(),
      scope: this.config.scope, state, code_challenge: challenge, code_challenge_method: "S256",
    });
    if (this.config.resource) q.set("resource", this.config.resource);
    location.assign(`${meta.authorization_endpoint}?${q}`);
  },

  /** On /auth/callback: checks `state`, exchanges the code, and returns to the page the
   * sign-in started from. Throws with a message for the bidder. */
  async callback() {
    const params = new URLSearchParams(location.search);
    const saved = JSON.parse(sessionStorage.getItem(PKCE_KEY) || "null");
    sessionStorage.removeItem(PKCE_KEY);
    if (params.get("error")) throw new Error(params.get("error_description") || params.get("error"));
    if (!saved || !params.get("code") || params.get("state") !== saved.state) {
      throw new Error("this sign-in was not started here (state mismatch): try again");
    }
    await this.grant({
      grant_type: "authorization_code", code: params.get("code"),
      redirect_uri: this.redirectUri(), code_verifier: saved.verifier,
    });
    return saved.back && saved.back.startsWith("/") ? saved.back : "/";
  },

  async grant(fields) {
    const meta = await this.discover();
    const body = new URLSearchParams({ client_id: this.config.client_id, ...fields });
    if (this.config.resource) body.set("resource", this.config.resource);
    const res = await fetch(meta.token_endpoint, { method: "POST", body });
    const json = await res.json().catch(() => ({}));
    if (!res.ok || !json.access_token) {
      const err = new Error(json.error_description || json.error || `token endpoint answered ${res.status}`);
      err.refused = res.status >= 400 && res.status < 500;
      throw err;
    }
    const previous = JSON.parse(sessionStorage.getItem(OIDC_KEY) || "{}");
    sessionStorage.setItem(TOKEN_KEY, json.access_token);
    sessionStorage.setItem(OIDC_KEY, JSON.stringify({
      refresh: json.refresh_token || previous.refresh || null,
      issuedAt: Date.now(),
      expiresAt: Date.now() + 1000 * (Number(json.expires_in) || 300),
    }));
    return json.access_token;
  },

  /** Refreshes the access token when three quarters of its life (at most a minute before
   * its end) have passed, and again after each refresh. */
  schedule() {
    clearTimeout(this.timer);
    const saved = JSON.parse(sessionStorage.getItem(OIDC_KEY) || "null");
    if (!this.config || !saved || !saved.refresh || !identity.token) return;
    const life = saved.expiresAt - saved.issuedAt;
    const at = saved.issuedAt + Math.max(life * 0.75, life - 60000);
    this.timer = setTimeout(() => this.refresh(saved.refresh), Math.max(0, at - Date.now()));
  },

  async refresh(refreshToken) {
    try {
      const token = await this.grant({ grant_type: "refresh_token", refresh_token: refreshToken });
      this.onToken(token);
      this.schedule();
    } catch (e) {
      if (e.refused) {
        sessionStorage.removeItem(OIDC_KEY);
        this.onExpired();
      } else {
        this.timer = setTimeout(() => this.refresh(refreshToken), 5000);
      }
    }
  },

  onExpired: () => {},

  forget() {
    clearTimeout(this.timer);
    sessionStorage.removeItem(OIDC_KEY);
  },
};

function b64url(bytes) {
  return btoa(String.fromCharCode(...new Uint8Array(bytes)))
    .replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function randomString(n) { return b64url(crypto.getRandomValues(new Uint8Array(n))); }

function showIdentity() {
  $("oidc-sign-in").hidden = !oidc.config;
  $("token").value = identity.token;
  $("name").value = identity.name;
  $("name-field").hidden = !identity.devAuth;
  const who = identity.displayName;
  $("who").textContent = identity.signedIn
    ? `Bidding as ${who || "the token's bidder"}.`
    : "Watching anonymously: sign in to bid.";
  // Signed in, the form folds away (the summary line opens it again).
  $("identity").open = !identity.signedIn;
}

function setupIdentity(onChange) {
  $("identity-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const token = $("token").value.trim();
    const name = $("name").value.trim();
    // A token pasted by hand is not the provider's: nothing to refresh.
    if (token !== identity.token) oidc.forget();
    if (token) sessionStorage.setItem(TOKEN_KEY, token); else sessionStorage.removeItem(TOKEN_KEY);
    if (name) sessionStorage.setItem(NAME_KEY, name); else sessionStorage.removeItem(NAME_KEY);
    showIdentity();
    onChange();
  });
  $("sign-out").addEventListener("click", () => {
    oidc.forget();
    sessionStorage.removeItem(TOKEN_KEY);
    sessionStorage.removeItem(NAME_KEY);
    showIdentity();
    onChange();
  });
  $("oidc-sign-in").addEventListener("click", () => {
    oidc.signIn().catch((e) => { $("who").textContent = `Cannot sign in: ${e.message}`; });
  });
  oidc.onExpired = () => {
    $("who").textContent = "Your sign-in has expired: sign in again to bid.";
    $("identity").open = true;
  };
  showIdentity();
  oidc.schedule();
}

// ---------------------------------------------------------------- the list

async function listView() {
  $("list-view").hidden = false;
  $("conn").hidden = true;
  document.title = "Auctions · Gavel";
  let items = [];
  let next = null;
  let offset = 0;
  const render = () => {
    const list = $("list");
    list.replaceChildren();
    for (const a of items) {
      const li = document.createElement("li");
      li.className = "card";
      li.dataset.auction = a.auction;
      const link = document.createElement("a");
      link.href = `/auctions/${a.auction}`;
      const title = document.createElement("div");
      title.className = "title";
      title.textContent = a.title;
      const meta = document.createElement("div");
      meta.className = "meta";
      const amount = document.createElement("span");
      amount.className = "amount";
      amount.textContent = a.price === null
        ? `Opening bid ${money(a.starting_price, a.currency)}` : money(a.price, a.currency);
      const bids = document.createElement("span");
      bids.textContent = a.bid_count === 1 ? "1 bid" : `${a.bid_count} bids`;
      const left = document.createElement("span");
      left.className = "left";
      const now = Date.now() + offset;
      if (a.phase === "scheduled" && a.starts_at) left.textContent = `opens in ${duration(a.starts_at - now)}`;
      else if (a.ends_at > now) left.textContent = `${duration(a.ends_at - now)} left`;
      else left.textContent = "closing";
      meta.append(amount, bids, left);
      link.append(title, meta);
      li.append(link);
      list.append(li);
    }
    $("list-status").textContent = items.length ? "" : "No open or upcoming auctions.";
    $("list-more").hidden = !next;
  };
  const load = async (after) => {
    try {
      const url = `/v1/auctions?limit=50${after ? `&after=${encodeURIComponent(after)}` : ""}`;
      const res = await fetch(url);
      const body = await res.json();
      if (!res.ok) throw new Error(body.message || res.statusText);
      offset = body.server_time - Date.now();
      items = after ? items.concat(body.auctions) : body.auctions;
      next = body.next;
      render();
    } catch (e) {
      $("list-status").textContent = `The list is unavailable (${e.message}); retrying.`;
    }
  };
  $("list-more").addEventListener("click", () => load(next));
  await load(null);
  setInterval(render, 1000);
  setInterval(() => { if (!next) load(null); }, 10000);
}

// ---------------------------------------------------------------- one auction

const REFUSALS = {
  BID_TOO_LOW: (m, cur) => m.min_next != null
    ? `Too low: the minimum next bid is ${money(m.min_next, cur)}.` : "Too low for the current price.",
  ALREADY_LEADING: () => "You are already leading: only a maximum above your current one changes anything.",
  RATE_LIMITED: (m) => m.retry_after_ms != null
    ? `Too many bids: wait ${Math.max(1, Math.ceil(m.retry_after_ms / 1000))} s and try again.`
    : "Too many bids: wait a moment and try again.",
  AUCTION_CLOSED: () => "The auction has closed: no more bids.",
  AUCTION_NOT_OPEN: () => "The auction has not opened yet.",
  UNKNOWN_AUCTION: () => "There is no such auction.",
  UNAUTHENTICATED: () => "Sign in to bid: you have no token, or it has expired.",
  INVALID_AMOUNT: (m) => `That amount cannot be bid: ${m.message}`,
  UNAVAILABLE: (m) => m.retry_after_ms != null
    ? `The auction is being restored: try again in ${Math.max(1, Math.ceil(m.retry_after_ms / 1000))} s. Nothing was decided.`
    : "The service cannot decide bids right now: try again shortly. Check the price before bidding again.",
  TOO_LARGE: (m) => `Refused: ${m.message}`,
  INVALID_MESSAGE: (m) => `Refused: ${m.message}`,
};

function refusal(m, currency) {
  const f = REFUSALS[m.code];
  return f ? f(m, currency) : `Refused (${m.code}): ${m.message}`;
}

class AuctionPage {
  constructor(id) {
    this.id = id;
    this.s = {
      seq: null, epoch: null, title: null, currency: null, phase: null, price: null,
      leader: null, bidCount: 0, minNext: null, endsAt: null, reserveMet: false, yourMax: null,
      result: null,
    };
    this.offset = 0;          // server clock - local clock, ms
    this.ws = null;
    this.online = false;
    this.resyncing = false;
    this.backoff = 500;
    this.failedOpens = 0;
    this.nextRef = 1;
    this.pending = new Map(); // ref -> {amount, max}
    this.standing = null;     // "leading" | "outbid" | null
    this.prefill = "";
    this.initialSince = null;
    this.feedSeqs = new Set();
    this.refreshed = 0;       // tokens the server took over the socket (`refreshed`)
  }

  /** A fresh access token from the provider: the open connection takes it over (no
   * reconnect); a connection opened later presents it. */
  newToken(token) {
    this.send({ type: "refresh", token });
  }

  async start() {
    $("auction-view").hidden = false;
    document.title = `${this.id} · Gavel`;
    $("bid-form").addEventListener("submit", (ev) => { ev.preventDefault(); this.submit("amount"); });
    $("max-form").addEventListener("submit", (ev) => { ev.preventDefault(); this.submit("max"); });
    try {
      const res = await fetch(`/v1/auctions/${this.id}`);
      if (res.ok) {
        const snap = await res.json();
        this.initialSince = Math.max(0, snap.seq - BACKFILL);
      } else if (res.status === 404) {
        $("title").textContent = "No such auction";
        $("phase").textContent = this.id;
      }
    } catch (_) { /* the WebSocket says more */ }
    this.connect();
    setInterval(() => this.tick(), 250);
  }

  // ------------------------------------------------------------ connection

  connect() {
    const proto = location.protocol === "https:" ? "wss" : "ws";
    let url = `${proto}://${location.host}/v1/ws`;
    let protocols;
    if (identity.token) protocols = ["gavel.v1", `bearer.${identity.token}`];
    else if (identity.devAuth && identity.name) url += `?bidder=${encodeURIComponent(identity.name)}`;
    const ws = protocols ? new WebSocket(url, protocols) : new WebSocket(url);
    this.ws = ws;
    let opened = false;
    ws.addEventListener("open", () => {
      opened = true;
      this.failedOpens = 0;
      this.backoff = 500;
      this.setOnline(true);
      this.subscribe();
    });
    ws.addEventListener("message", (ev) => {
      if (ws !== this.ws) return;
      let msg;
      try { msg = JSON.parse(ev.data); } catch (_) { return; }
      this.handle(msg);
    });
    ws.addEventListener("close", () => {
      if (ws !== this.ws) return;
      this.setOnline(false);
      if (!opened) this.failedOpens += 1;
      if (this.failedOpens >= 3 && identity.token) {
        this.say("Cannot connect. If this goes on, check your token (or sign out to watch).", "refused");
      }
      const wait = this.backoff * (0.75 + Math.random() * 0.5);
      this.backoff = Math.min(this.backoff * 2, 5000);
      setTimeout(() => { if (ws === this.ws) this.connect(); }, wait);
    });
  }

  reconnect() {
    const old = this.ws;
    this.ws = null;
    if (old) old.close(1000);
    this.standing = null;
    this.connect();
  }

  subscribe() {
    // The last applied seq; at first, a few events back for the feed (none if the REST
    // snapshot was unavailable: then the feed starts now).
    const since = this.s.seq ?? this.initialSince;
    const msg = { type: "subscribe", auction: this.id };
    if (since !== null) msg.since = since;
    if (this.s.epoch != null) msg.epoch = this.s.epoch;
    this.resyncing = true;
    this.send(msg);
  }

  send(msg) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) {
      this.ws.send(JSON.stringify(msg));
      return true;
    }
    return false;
  }

  setOnline(online) {
    this.online = online;
    document.body.dataset.conn = online ? "online" : "offline";
    $("conn").textContent = online ? "Live" : "Offline — reconnecting…";
    $("bid-button").disabled = !online;
    $("max-button").disabled = !online;
  }

  // ------------------------------------------------------------ messages

  handle(m) {
    if (m.auction !== undefined && m.auction !== null && m.auction !== this.id && m.type !== "welcome") return;
    switch (m.type) {
      case "welcome":
        this.offset = m.server_time - Date.now();
        break;
      case "snapshot": this.onSnapshot(m); break;
      case "price": if (this.inOrder(m)) this.onPrice(m); break;
      case "extended": this.onExtended(m); break;
      case "closed": if (this.inOrder(m)) this.onClosed(m); break;
      case "outbid": this.onOutbid(m); break;
      case "bid_result": this.onBidResult(m); break;
      case "bid_rejected": this.onBidRejected(m); break;
      case "reset": this.onReset(m); break;
      case "refreshed": this.refreshed += 1; break;
      case "error":
        if (m.code === "UNKNOWN_AUCTION") {
          $("title").textContent = "No such auction";
          $("phase").textContent = this.id;
        } else {
          this.say(refusal(m, this.s.currency), "refused");
        }
        break;
      default: break;
    }
  }

  /** Whether an event is the next one; resubscribes from the last seen seq on a gap. */
  inOrder(m) {
    if (this.s.seq === null) return true;
    if (m.seq <= this.s.seq) return false;
    if (m.seq === this.s.seq + 1) return true;
    if (!this.resyncing) this.subscribe();
    return false;
  }

  onSnapshot(m) {
    if (this.s.epoch != null && m.epoch != null && m.epoch !== this.s.epoch) {
      // A new history without a `reset` first (say, after a reconnect): start the feed over.
      this.feedNote("The auction's live state was restored; continuing from here.");
      for (const li of [...$("feed").querySelectorAll("li[data-seq]")]) li.remove();
      this.feedSeqs.clear();
    }
    const s = this.s;
    Object.assign(s, {
      seq: m.seq, epoch: m.epoch ?? s.epoch, title: m.title, currency: m.currency, phase: m.phase,
      price: m.price, leader: m.leader, bidCount: m.bid_count, minNext: m.min_next,
      reserveMet: m.reserve_met, yourMax: m.your_max ?? null,
    });
    this.moveEnd(m.ends_at, false);
    this.resyncing = false;
    if (m.phase === "closed" || m.phase === "cancelled") {
      s.result = s.result || {
        winner: m.reserve_met && m.phase === "closed" ? m.leader : null,
        finalPrice: m.price, reserveMet: m.reserve_met, cancelled: m.phase === "cancelled",
      };
    }
    const me = identity.displayName;
    if (s.yourMax != null && me) this.standing = s.leader === me ? "leading" : "outbid";
    else if (s.yourMax == null) this.standing = null;
    this.render();
  }

  onPrice(m) {
    const s = this.s;
    Object.assign(s, { seq: m.seq, price: m.price, leader: m.leader, bidCount: m.bid_count, minNext: m.min_next });
    if (s.phase === null || s.phase === "scheduled") s.phase = "open";
    const moved = this.moveEnd(m.ends_at, true);
    this.feedBid(m, moved);
    const me = identity.displayName;
    if (me && m.leader === me && this.standing !== null) this.setStanding("leading");
    this.render();
  }

  onExtended(m) {
    if (this.s.seq !== null && m.seq < this.s.seq) return;
    this.moveEnd(m.ends_at, true);
    this.render();
  }

  onClosed(m) {
    const s = this.s;
    s.seq = m.seq;
    s.phase = m.cancelled ? "cancelled" : "closed";
    s.reserveMet = m.reserve_met;
    s.result = { winner: m.winner, finalPrice: m.final_price, reserveMet: m.reserve_met, cancelled: m.cancelled };
    this.feedNote(m.cancelled ? "Cancelled." : m.winner
      ? `Closed: ${m.winner} wins at ${money(m.final_price, s.currency)}.`
      : m.final_price != null ? "Closed: reserve not met, not sold." : "Closed without bids.", m.seq);
    this.render();
  }

  onOutbid(m) {
    this.setStanding("outbid");
    $("alert").textContent = `You have been outbid: the price is now ${money(m.price, this.s.currency)}; `
      + `the minimum next bid is ${money(m.min_next, this.s.currency)}.`;
  }

  onBidResult(m) {
    const sent = this.pending.get(String(m.ref));
    this.pending.delete(String(m.ref));
    const cur = this.s.currency;
    if (sent) this.s.yourMax = sent.max ?? sent.amount;
    if (m.outcome === "leading") {
      this.setStanding("leading");
      this.say(`Accepted: you are leading at ${money(m.price, cur)}.`, "accepted");
    } else if (m.outcome === "ceiling_raised") {
      this.setStanding("leading");
      this.say(`Your maximum is now ${money(this.s.yourMax, cur)}; you are still leading at ${money(m.price, cur)}.`, "accepted");
    } else {
      this.setStanding("outbid");
      this.say(`Accepted, but another bidder's maximum is higher: the price is now ${money(m.price, cur)}.`, "refused");
    }
    this.render();
  }

  onBidRejected(m) {
    this.pending.delete(String(m.ref));
    if (m.min_next != null) this.s.minNext = Math.max(this.s.minNext ?? 0, m.min_next);
    this.say(refusal(m, this.s.currency), "refused");
    this.render();
  }

  /** The server's history changed under the page (restored from the record, or `since`
   * unknown): forget the seq, drop feed entries after the history's last seq (they may
   * never have been recorded, and their seqs will be reused), render the next snapshot. */
  onReset(m) {
    this.s.seq = null;
    this.s.epoch = m.epoch ?? null;
    this.resyncing = true;
    for (const li of [...$("feed").querySelectorAll("li[data-seq]")]) {
      const seq = Number(li.dataset.seq);
      if (m.seq == null || seq > m.seq) {
        li.remove();
        this.feedSeqs.delete(seq);
      }
    }
    this.feedNote("The auction's live state was restored from its record; continuing from there.");
  }

  setStanding(standing) {
    this.standing = standing;
    if (standing === "leading") $("alert").textContent = "";
    this.render();
  }

  /** Applies a new end; returns whether it moved later (and says so). */
  moveEnd(endsAt, announce) {
    const old = this.s.endsAt;
    this.s.endsAt = endsAt;
    if (announce && old !== null && endsAt > old) {
      const note = $("end-moved");
      note.hidden = false;
      note.textContent = `The end moved to ${clockTime(endsAt)}: a late bid extended it (soft close).`;
      return true;
    }
    return false;
  }

  // ------------------------------------------------------------ bidding

  submit(kind) {
    const cur = this.s.currency;
    if (!cur) return;
    const input = $(kind === "max" ? "max" : "amount");
    const parsed = parseAmount(input.value, cur);
    if (parsed.error) { this.say(parsed.error, "refused"); input.focus(); return; }
    const ref = String(this.nextRef++);
    const bid = kind === "max" ? { max: parsed.value } : { amount: parsed.value };
    if (!this.send({ type: "bid", auction: this.id, ref, ...bid })) {
      this.say("Offline: the bid was not sent. It will not be sent later either.", "refused");
      return;
    }
    this.pending.set(ref, bid);
    this.say("Bid sent…", "");
  }

  say(text, kind) {
    const el = $("message");
    el.textContent = text;
    el.className = `message ${kind}`;
  }

  // ------------------------------------------------------------ feed

  feedBid(m, moved) {
    if (this.feedSeqs.has(m.seq)) return;
    this.feedSeqs.add(m.seq);
    const li = document.createElement("li");
    li.dataset.seq = String(m.seq);
    const seq = document.createElement("span");
    seq.className = "seq";
    seq.textContent = `#${m.seq}`;
    const text = document.createElement("span");
    text.textContent = `${m.leader} leads at ${money(m.price, this.s.currency)}${moved ? " · end moved" : ""}`;
    li.append(seq, text);
    this.feedPush(li);
  }

  feedNote(text, seq) {
    const li = document.createElement("li");
    li.className = "system";
    if (seq != null) li.dataset.closeSeq = String(seq);
    li.textContent = text;
    this.feedPush(li);
  }

  feedPush(li) {
    const feed = $("feed");
    feed.prepend(li);
    while (feed.children.length > FEED_LIMIT) feed.lastElementChild.remove();
  }

  // ------------------------------------------------------------ rendering

  render() {
    const s = this.s;
    const cur = s.currency;
    if (s.title) {
      $("title").textContent = s.title;
      document.title = `${s.title} · Gavel`;
    }
    $("amount-currency").textContent = cur || "—";
    $("max-currency").textContent = cur || "—";
    const phases = {
      scheduled: "Not open yet", open: "Open for bids", closing: "Closing…",
      closed: "Closed", cancelled: "Cancelled",
    };
    $("phase").textContent = phases[s.phase] || "";
    $("price").textContent = s.price === null ? "No bids yet" : money(s.price, cur);
    $("leader").textContent = s.leader || "—";
    $("bid-count").textContent = String(s.bidCount);
    $("min-next").textContent = money(s.minNext, cur);
    if (s.endsAt !== null) {
      $("countdown").dataset.endsAt = String(s.endsAt);
      $("ends").textContent = `at ${clockTime(s.endsAt)}`;
    }
    const you = $("you");
    you.hidden = this.standing === null;
    you.className = `you ${this.standing || ""}`;
    you.textContent = this.standing === "leading" ? "You are leading."
      : this.standing === "outbid" ? "You have been outbid." : "";
    const yourMax = $("your-max");
    yourMax.hidden = s.yourMax == null;
    yourMax.textContent = s.yourMax == null ? "" : `Your maximum: ${money(s.yourMax, cur)}`;
    const over = s.phase === "closed" || s.phase === "cancelled";
    $("bidding").hidden = over;
    if (over) {
      // The result says it all: no standing, no outbid alert, no next bid.
      you.hidden = true;
      $("alert").textContent = "";
      $("end-moved").hidden = true;
      $("min-next").textContent = "—";
    }
    $("leader-label").textContent = over ? "Winner" : "Leader";
    $("price-label").textContent = over ? "Final price" : "Current price";
    if (over) $("leader").textContent = s.result && s.result.winner ? s.result.winner : "None";
    const result = $("result");
    result.hidden = !over || !s.result;
    if (over && s.result) {
      const r = s.result;
      const me = identity.displayName;
      result.classList.toggle("won", Boolean(me && r.winner === me));
      result.textContent = r.cancelled ? "This auction was cancelled: no winner."
        : r.winner ? `${me && r.winner === me ? "You won" : `Won by ${r.winner}`} at ${money(r.finalPrice, cur)}.`
        : r.finalPrice != null ? `Reserve not met: not sold (last bid ${money(r.finalPrice, cur)}).`
        : "Closed without bids.";
      if (!r.cancelled && !r.winner && r.finalPrice != null) result.dataset.outcome = "reserve-not-met";
      else result.dataset.outcome = r.cancelled ? "cancelled" : r.winner ? "sold" : "no-bids";
    }
    if (cur && s.minNext != null) {
      const input = $("amount");
      const text = plainAmount(s.minNext, cur);
      if (document.activeElement !== input && (input.value === "" || input.value === this.prefill)) {
        input.value = text;
        this.prefill = text;
      }
    }
    this.tick();
  }

  tick() {
    const s = this.s;
    const el = $("countdown");
    if (s.endsAt === null) return;
    const left = s.endsAt - (Date.now() + this.offset);
    if (s.phase === "closed" || s.phase === "cancelled") el.textContent = "Ended";
    else if (s.phase === "scheduled") el.textContent = "Not open yet";
    else if (left <= 0) el.textContent = "Closing…";
    else el.textContent = `${duration(left)} left`;
  }
}

// ---------------------------------------------------------------- start

async function main() {
  try {
    const res = await fetch("/v1/config");
    if (res.ok) {
      const config = await res.json();
      identity.devAuth = Boolean(config.dev_auth);
      oidc.config = config.oidc || null;
    }
  } catch (_) { /* assume production auth */ }
  if (location.pathname === "/auth/callback" && oidc.config) {
    try {
      location.replace(await oidc.callback());
      return;
    } catch (e) {
      history.replaceState(null, "", "/");
      setupIdentity(() => {});
      $("who").textContent = `Sign-in failed: ${e.message}`;
      $("identity").open = true;
      await listView();
      return;
    }
  }
  const m = location.pathname.match(/^\/auctions\/([^/]+)\/([^/]+)\/?$/);
  if (m) {
    const page = new AuctionPage(`${decodeURIComponent(m[1])}/${decodeURIComponent(m[2])}`);
    oidc.onToken = (token) => { page.newToken(token); showIdentity(); };
    setupIdentity(() => page.reconnect());
    window.gavelPage = page;
    await page.start();
  } else {
    setupIdentity(() => {});
    await listView();
  }
}

main();
