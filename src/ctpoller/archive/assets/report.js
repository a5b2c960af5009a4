/* The page's script: filters, tables and charts from the JSON in #ctpoller-data (see archive/html.py).
   Data reaches the DOM only through textContent, never as markup. After Chart.js has drawn a chart its
   canvas gets data-rendered="true"; any error is written to the body element's data-error attribute. */
(function () {
  "use strict";
  var body = document.body;
  window.addEventListener("error", function (event) {
    body.setAttribute("data-error", String(event.message || "error"));
  });
  var COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173"];
  var data = JSON.parse(document.getElementById("ctpoller-data").textContent);
  var items = data.items;
  var charts = {};
  var filters = {
    station: document.getElementById("filter-station"),
    rule: document.getElementById("filter-rule"),
    severity: document.getElementById("filter-severity"),
    outcome: document.getElementById("filter-outcome")
  };

  function distinct(key) {
    var seen = {};
    items.forEach(function (item) { if (item[key]) { seen[item[key]] = true; } });
    return Object.keys(seen).sort();
  }

  function addOptions(select, values) {
    values.forEach(function (value) {
      var option = document.createElement("option");
      option.value = value;
      option.textContent = value;
      select.appendChild(option);
    });
  }

  function fixed(number, digits) {
    return number === null || number === undefined ? "" : number.toFixed(digits);
  }

  function matches(item) {
    var outcome = filters.outcome.value;
    if (filters.station.value && item.station !== filters.station.value) { return false; }
    if (filters.rule.value && item.rule !== filters.rule.value) { return false; }
    if (filters.severity.value && item.severity !== filters.severity.value) { return false; }
    if (outcome === "(open)") { return !item.outcome; }
    if (outcome) { return item.outcome === outcome; }
    return true;
  }

  function short(number) { return String(Number(number.toFixed(3))); }

  // Where a limit comes from: "2 × 47 mGy (UK NDRL 2022)", "47 mGy (UK NDRL 2022)", "AAPM Dose Check 2011".
  function reference(i) {
    if (i.level === null || i.level === undefined) { return i.reference || ""; }
    var multiple = i.multiple === null || i.multiple === undefined ? 1 : i.multiple;
    var times = multiple !== 1 ? short(multiple) + " \u00d7 " : "";
    return times + short(i.level) + " " + i.unit + " (" + (i.reference || "reference level") + ")";
  }

  var COLUMNS = [
    ["Notified (UTC)", function (i) { return i.notified; }],
    ["Study date", function (i) { return i.date || ""; }],
    ["Station", function (i) { return i.station; }],
    ["Rule", function (i) { return i.rule; }],
    ["Severity", function (i) { return i.severity; }],
    ["Metric", function (i) { return i.metric; }],
    ["Value", function (i) { return fixed(i.value, 2) + " " + i.unit; }, "number"],
    ["Limit", function (i) { return fixed(i.limit, 2) + " " + i.unit; }, "number"],
    ["Ratio", function (i) { return i.ratio === null ? "" : fixed(i.ratio, 2) + "\u00d7"; }, "number"],
    ["Reference", function (i) { return reference(i); }],
    ["Protocol", function (i) { return i.protocol; }],
    ["Study description", function (i) { return i.description; }],
    ["Email", function (i) { return i.status; }]
  ];
  var OPEN_COLUMNS = [["Age (days)", function (i) { return String(i.age); }, "number"]].concat(COLUMNS);
  var ALL_COLUMNS = COLUMNS.concat([
    ["Outcome", function (i) { return i.outcome || "open"; }],
    ["Reason", function (i) { return i.reason || ""; }]
  ]);

  function fillTable(table, columns, rows) {
    table.textContent = "";
    var head = table.createTHead().insertRow();
    columns.forEach(function (column) {
      var th = document.createElement("th");
      th.textContent = column[0];
      head.appendChild(th);
    });
    var tbody = table.createTBody();
    rows.forEach(function (item) {
      var tr = tbody.insertRow();
      if (!item.outcome) { tr.className = "open"; }
      columns.forEach(function (column) {
        var td = tr.insertCell();
        td.textContent = column[1](item);
        if (column[2]) { td.className = column[2]; }
        if (column[0] === "Ratio" && item.ratio !== null && item.ratio >= 2) { td.className += " high"; }
        if (column[0] === "Severity" && item.severity === "alert") { td.className = "alert"; }
      });
    });
  }

  function draw(id, config) {
    if (charts[id]) { charts[id].destroy(); }
    var canvas = document.getElementById(id);
    canvas.removeAttribute("data-rendered");
    config.plugins = [{
      id: "ctpollerRendered",
      afterRender: function (chart) { chart.canvas.setAttribute("data-rendered", "true"); }
    }];
    config.options.animation = false;
    config.options.responsive = true;
    config.options.maintainAspectRatio = false;
    charts[id] = new Chart(canvas, config);
  }

  function monthsChart(rows) {
    var months = {}, stations = {};
    rows.forEach(function (item) {
      months[item.month] = true;
      stations[item.station] = stations[item.station] || {};
      stations[item.station][item.month] = (stations[item.station][item.month] || 0) + 1;
    });
    var labels = Object.keys(months).sort();
    var datasets = Object.keys(stations).sort().map(function (station, index) {
      return {
        label: station,
        backgroundColor: COLOURS[index % COLOURS.length],
        data: labels.map(function (month) { return stations[station][month] || 0; })
      };
    });
    draw("chart-months", {
      type: "bar",
      data: { labels: labels, datasets: datasets },
      options: {
        scales: { x: { stacked: true }, y: { stacked: true, beginAtZero: true, ticks: { precision: 0 },
          title: { display: true, text: "notifications" } } },
        plugins: { legend: { position: "bottom" } }
      }
    });
  }

  function day(text) { return Date.parse(text + "T00:00:00Z"); }

  function ratiosChart(rows) {
    var rules = {}, low = Infinity, high = -Infinity;
    rows.forEach(function (item) {
      if (item.ratio === null) { return; }
      var x = day(item.date || item.notified.slice(0, 10));
      low = Math.min(low, x);
      high = Math.max(high, x);
      (rules[item.rule] = rules[item.rule] || []).push({ x: x, y: item.ratio, item: item });
    });
    var datasets = Object.keys(rules).sort().map(function (rule, index) {
      var colour = COLOURS[index % COLOURS.length];
      return { type: "scatter", label: rule, data: rules[rule], backgroundColor: colour, borderColor: colour,
        pointRadius: 4 };
    });
    if (low <= high) {
      datasets.push({ type: "line", label: "limit", data: [{ x: low, y: 1 }, { x: high, y: 1 }],
        borderColor: "#9b1c1c", borderDash: [6, 4], borderWidth: 2, pointRadius: 0, fill: false });
    }
    draw("chart-ratios", {
      type: "scatter",
      data: { datasets: datasets },
      options: {
        scales: {
          x: { type: "linear", title: { display: true, text: "study date" },
            ticks: { callback: function (value) { return new Date(value).toISOString().slice(0, 10); } } },
          y: { beginAtZero: true, title: { display: true, text: "value \u00f7 limit" } }
        },
        plugins: {
          legend: { position: "bottom" },
          tooltip: { callbacks: { label: function (context) {
            var item = context.raw.item;
            if (!item) { return "limit"; }
            return item.rule + ": " + fixed(item.value, 2) + " " + item.unit + " (limit " + fixed(item.limit, 2) +
              ", " + fixed(item.ratio, 2) + "\u00d7) " + (item.date || "");
          } } }
        }
      }
    });
  }

  function render() {
    var rows = items.filter(matches);
    var open = rows.filter(function (item) { return !item.outcome; });
    open.sort(function (a, b) { return b.age - a.age; });
    var newest = rows.slice().reverse().slice(0, data.tableRows);
    fillTable(document.getElementById("open-table"), OPEN_COLUMNS, open.slice(0, data.tableRows));
    document.getElementById("open-empty").hidden = open.length > 0;
    document.getElementById("open-count").textContent = "(" + open.length + ")";
    fillTable(document.getElementById("all-table"), ALL_COLUMNS, newest);
    document.getElementById("all-count").textContent = rows.length > newest.length
      ? "(newest " + newest.length + " of " + rows.length + ")" : "(" + rows.length + ")";
    document.getElementById("shown").textContent = rows.length + " of " + items.length + " shown";
    monthsChart(rows);
    ratiosChart(rows);
  }

  addOptions(filters.station, distinct("station"));
  addOptions(filters.rule, distinct("rule"));
  addOptions(filters.severity, distinct("severity"));
  addOptions(filters.outcome, ["(open)"].concat(distinct("outcome")));
  Object.keys(filters).forEach(function (key) { filters[key].addEventListener("change", render); });
  render();
  body.setAttribute("data-ready", "true");
}());
