// egressd status page: filters and refreshes the recent denials, and runs
// the policy tester against /api/check. Everything from the server is put
// in the page as text (textContent), never as markup.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);

  // Recent denials: the filter box hides rows that do not contain its text.
  const table = $("denials");
  const filter = $("filter");
  function applyFilter() {
    const q = filter.value.trim().toLowerCase();
    for (const tr of table.tBodies[0].rows) {
      tr.hidden = q !== "" && !tr.textContent.toLowerCase().includes(q);
    }
  }
  filter.addEventListener("input", applyFilter);

  // The same columns and formats as the server-rendered table.
  const columns = ["ts", "listener", "client", "user", "group", "host", "port", "sni", "decision", "reason", "rule"];
  const hostColumns = new Set(["host", "sni"]);
  function cell(key, value) {
    if (key === "ts") {
      return value.slice(0, 10) + " " + value.slice(11, 19) + "Z";
    }
    return String(value);
  }
  function render(denials) {
    const body = document.createElement("tbody");
    for (const d of denials) {
      const tr = body.insertRow();
      tr.className = "decision-" + d.decision;
      for (const key of columns) {
        const td = tr.insertCell();
        td.textContent = cell(key, d[key]);
        if (key === "port") td.className = "num";
        if (hostColumns.has(key)) td.className = "host";
      }
    }
    table.replaceChild(body, table.tBodies[0]);
    $("denials-empty").hidden = denials.length > 0;
    applyFilter();
  }
  async function refresh() {
    try {
      const resp = await fetch("/api/denials?limit=100", { cache: "no-store" });
      if (!resp.ok) throw new Error("HTTP " + resp.status);
      render((await resp.json()).denials);
      $("denials-state").textContent = "";
    } catch (e) {
      $("denials-state").textContent = "(refresh failed: " + e.message + "; showing older data)";
    }
  }
  setInterval(refresh, 5000);

  // Policy tester.
  const form = $("tester");
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const params = new URLSearchParams();
    for (const [k, v] of new FormData(form)) {
      if (String(v).trim() !== "") params.set(k, String(v).trim());
    }
    const out = $("t-result");
    const err = $("t-error");
    $("t-submit").disabled = true;
    try {
      const resp = await fetch("/api/check?" + params.toString(), { cache: "no-store" });
      const res = await resp.json();
      out.hidden = false;
      out.dataset.decision = resp.ok ? res.decision : "error";
      if (!resp.ok) {
        $("t-decision").textContent = "error";
        $("t-reason").textContent = "";
        for (const id of ["t-rule", "t-group", "t-host", "t-port", "t-addrs"]) $(id).textContent = "-";
        err.textContent = res.error;
        err.hidden = false;
        return;
      }
      $("t-decision").textContent = res.decision;
      $("t-decision").className = "mode decision-" + res.decision;
      $("t-reason").textContent = res.reason || "(allowed by a rule)";
      $("t-rule").textContent = res.rule || "-";
      $("t-group").textContent = res.group || "-";
      $("t-host").textContent = res.host || "-";
      $("t-port").textContent = String(res.port);
      $("t-addrs").textContent = res.addrs.length ? res.addrs.join(", ") : "-";
      err.textContent = res.error || "";
      err.hidden = !res.error;
    } catch (e) {
      out.hidden = false;
      out.dataset.decision = "error";
      err.textContent = "request failed: " + e.message;
      err.hidden = false;
    } finally {
      $("t-submit").disabled = false;
    }
  });
})();
