// The try-it page: plain JavaScript against the door's own API (same origin, so no CORS).
"use strict";

const KEY_STORAGE = "digitlab-key"; // sessionStorage: the key lives as long as the tab, never on disk
const SLOW_MS = 5000; // a request still unanswered after this says so (the server keeps working)
const LOOP_MS = 100; // the looping animation's frame time, as the server's GIF
const HEALTH_MS = 10000; // how often the header re-asks /health

const $ = (selector, root = document) => root.querySelector(selector);
const byTestId = (id, root = document) => $(`[data-testid="${id}"]`, root);

// -- the key ----------------------------------------------------------------------------------------

// `make door` prints http(s)://host:port/#key=...: the fragment never reaches a server. Keep it for
// the tab, then take it out of the address bar (and out of the history and of any copied link).
function takeKeyFromFragment() {
  const pair = location.hash.slice(1).split("&").find((p) => p.startsWith("key="));
  if (pair) {
    sessionStorage.setItem(KEY_STORAGE, decodeURIComponent(pair.slice(4)));
    history.replaceState(null, "", location.pathname + location.search);
  }
}

const apiKey = () => sessionStorage.getItem(KEY_STORAGE);

function askForKey(reason) {
  const panel = $("#key-panel");
  panel.hidden = false;
  if (reason) $("p", panel).textContent = reason;
  $("#key-input").focus();
}

// -- errors and slow answers ------------------------------------------------------------------------

class ApiError extends Error {}

// An error replaces the section's last answer: bars or text left from an earlier question would read as
// the answer to this one (the elements marked data-result).
function showError(section, message) {
  for (const result of section.querySelectorAll("[data-result]")) result.replaceChildren();
  const box = byTestId("error", section);
  box.textContent = message;
  box.hidden = false;
}

function clearError(section) {
  byTestId("error", section).hidden = true;
}

// The server's own words when it sent JSON ({"code", "type", "message"}); else the status line.
async function errorFrom(response) {
  const text = await response.text();
  try {
    return JSON.parse(text).message || text;
  } catch {
    return `${response.status} ${response.statusText}: ${text.slice(0, 200)}`;
  }
}

// POST /predictions/<model> with the tab's key. While it waits, `note` (an element) says so after
// SLOW_MS; a refused key sends the user back to the key form.
async function predict(model, payload, note) {
  const key = apiKey();
  if (!key) {
    askForKey();
    throw new ApiError("no API key yet: enter it above");
  }
  const slow = setTimeout(() => {
    note.textContent = `still waiting for the server after ${SLOW_MS / 1000} s: it is busy, or stopped…`;
  }, SLOW_MS);
  let response;
  try {
    response = await fetch(`/predictions/${model}`, {
      method: "POST",
      headers: { "Content-Type": "application/json", Authorization: `Bearer ${key}` },
      body: JSON.stringify(payload),
    });
  } catch {
    throw new ApiError(`cannot reach the door at ${location.origin}: is it running (make door)?`);
  } finally {
    clearTimeout(slow);
    note.textContent = "";
  }
  if (response.status === 401) {
    sessionStorage.removeItem(KEY_STORAGE);
    askForKey("The door refused the key: paste the current one (.venv/bin/python -m ops.door key).");
  }
  if (!response.ok) throw new ApiError(await errorFrom(response));
  return response;
}

// Runs `work` with `button` disabled: errors land in the button's section, never on a blank page.
async function guarded(button, work) {
  const section = button.closest("section");
  clearError(section);
  button.disabled = true;
  try {
    await work();
  } catch (err) {
    showError(section, err instanceof ApiError ? err.message : `the page failed: ${err}`);
  } finally {
    button.disabled = false;
  }
}

function onSubmit(form, work) {
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    guarded($("button[type=submit]", form), work);
  });
}

const numberOf = (input) => (input.value.trim() === "" ? null : Number(input.value));

// A truncation slider and the <output> beside it; sent only below 1, so a default request is today's.
const TRUNCATION_OFF = 1;
function truncationOf(slider) {
  const psi = Number(slider.value);
  return psi < TRUNCATION_OFF ? { truncation: psi } : {};
}
for (const slider of document.querySelectorAll("input.truncation")) {
  const show = () => {
    slider.nextElementSibling.textContent = Number(slider.value) < TRUNCATION_OFF ? slider.value : "1 (off)";
  };
  slider.addEventListener("input", show);
  show();
}
const pngUrl = (base64) => `data:image/png;base64,${base64}`;

// -- palindrome -------------------------------------------------------------------------------------

function palindromePanel() {
  const form = $("#palindrome-form");
  onSubmit(form, async () => {
    // The digits go as typed: the server's schema says what is wrong with them.
    const digits = byTestId("palindrome-input").value.trim();
    const model = byTestId("palindrome-model").value;
    const answer = await (await predict(model, { digits }, byTestId("palindrome-answer"))).json();
    byTestId("palindrome-answer").textContent =
      `${digits} → ${answer.digit} (${answer.model}, ${answer.length} digits in)`;
    const bars = byTestId("palindrome-bars");
    bars.replaceChildren(...answer.probabilities.map((p, digit) => {
      const row = document.createElement("li");
      row.className = digit === answer.digit ? "best" : "";
      const percent = (100 * p).toFixed(1);
      row.innerHTML = `<span class="label">${digit}</span><span class="bar"><span></span></span><span class="value">${percent} %</span>`;
      $(".bar span", row).style.width = `${percent}%`;
      row.setAttribute("aria-label", `${digit}: ${percent} percent`);
      return row;
    }));
  });
}

// -- sample -----------------------------------------------------------------------------------------

const idText = (id) => `${id.seed}:${id.index}`;

function samplePanel(setEnd) {
  const form = $("#sample-form");
  const grid = byTestId("sample-grid");
  const hint = $("#pick-hint");
  let picked = [];
  onSubmit(form, async () => {
    const payload = { n: numberOf(byTestId("sample-n")) };
    const seed = numberOf(byTestId("sample-seed"));
    if (seed !== null) payload.seed = seed;
    const digit = numberOf(byTestId("sample-digit"));
    if (digit !== null) payload.digit = digit;  // the server searches for latents its classifier reads as it
    Object.assign(payload, truncationOf(byTestId("sample-truncation")));
    const psi = Number(byTestId("sample-truncation").value);
    const answer = await (await predict("sample", payload, hint)).json();
    picked = [];
    hint.textContent = `seed ${answer.seed}: pick two images to interpolate between them`;
    grid.replaceChildren(...answer.images.map((image) => {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "pick";
      button.innerHTML = `<img alt="sample ${idText(image.id)}"><span>${idText(image.id)}</span>`;
      $("img", button).src = pngUrl(image.png);
      // First click: the start; second: the end (then the next click starts a new pair).
      button.addEventListener("click", () => {
        picked = picked.length === 2 ? [] : picked;
        picked.push(image.id);
        setEnd(picked.length === 1 ? "start" : "end", image.id, psi);
        grid.querySelectorAll(".pick").forEach((b) => b.classList.remove("start", "end"));
        picked.forEach((id, k) => {
          [...grid.children].find((b) => $("span", b).textContent === idText(id)).classList.add(k ? "end" : "start");
        });
        hint.textContent = picked.length === 1
          ? `start ${idText(image.id)}: pick the end`
          : `from ${idText(picked[0])} to ${idText(picked[1])}: set as the interpolation's ends below`;
      });
      return button;
    }));
  });
}

// -- interpolate ------------------------------------------------------------------------------------

function interpolatePanel() {
  const form = $("#interp-form");
  const strip = byTestId("interp-frames");
  const player = byTestId("interp-player");
  const progress = $("#interp-progress");
  let loop = null; // the looping animation of the previous run

  function point(end) {
    const field = (name) => numberOf(form.elements[`${end}-${name}`]);
    return form.elements[`${end}-kind`].value === "digit"
      ? { digit: field("digit") }
      : { seed: field("seed"), index: field("index") };
  }

  const request = () => ({
    start: point("start"),
    end: point("end"),
    steps: numberOf(byTestId("interp-steps")),
    method: byTestId("interp-method").value,
    ...truncationOf(byTestId("interp-truncation")),
  });

  function play(urls) {
    let k = 0;
    loop = setInterval(() => {
      k = (k + 1) % urls.length;
      player.src = urls[k];
    }, LOOP_MS);
  }

  function drawFrame(frame, urls) {
    const figure = document.createElement("figure");
    figure.innerHTML = `<img alt="frame ${frame.index + 1} of ${frame.of}"><figcaption>${frame.digit}</figcaption>`;
    figure.title = `frame ${frame.index + 1}/${frame.of}: read as ${frame.digit} (${(100 * frame.confidence).toFixed(0)} %)`;
    $("img", figure).src = urls[urls.push(pngUrl(frame.png)) - 1];
    strip.append(figure);
    player.src = urls[urls.length - 1];
    player.hidden = false;
    progress.textContent = `frame ${frame.index + 1} of ${frame.of}`;
  }

  onSubmit(form, async () => {
    clearInterval(loop);
    strip.replaceChildren();
    // No frame yet: no player (an <img> without one shows a broken image), and none of the last run's.
    player.hidden = true;
    player.removeAttribute("src");
    // What the browser tests read: times from the click to the first and the last frame drawn, and
    // the wall clock at the first (the server stamps each frame with its own, same machine).
    for (const name of ["firstFrameMs", "lastFrameMs", "firstDrawnAt", "lastGeneratedAt"]) delete strip.dataset[name];
    strip.dataset.state = "waiting";
    const started = performance.now();
    const response = await predict("interpolate", { ...request(), stream: true }, progress);
    strip.dataset.state = "streaming";
    const urls = [];
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffered = "";
    let last = null;
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffered += value;
      const lines = buffered.split("\n");
      buffered = lines.pop(); // an unfinished line waits for its next chunk
      for (const line of lines.filter((l) => l.trim())) {
        const frame = JSON.parse(line);
        // A stream that fails after it began ends with the error object instead of a frame.
        if (frame.png === undefined) throw new ApiError(frame.message || line);
        drawFrame(frame, urls);
        if (frame.index === 0) {
          strip.dataset.firstFrameMs = (performance.now() - started).toFixed(1);
          strip.dataset.firstDrawnAt = String(Date.now() / 1000);
        }
        last = frame;
      }
    }
    if (!last || last.index !== last.of - 1) throw new ApiError("the stream ended before its last frame");
    strip.dataset.lastFrameMs = (performance.now() - started).toFixed(1);
    strip.dataset.lastGeneratedAt = String(last.generated_at);
    strip.dataset.state = "done";
    progress.textContent = `${last.of} frames; first after ${strip.dataset.firstFrameMs} ms, last after ${strip.dataset.lastFrameMs} ms`;
    play(urls);
  });

  // The server makes the GIF (one file, not streamed); the browser saves it under a name of our choosing.
  byTestId("interp-gif").addEventListener("click", (event) => guarded(event.currentTarget, async () => {
    const blob = await (await predict("interpolate", { ...request(), format: "gif" }, progress)).blob();
    const link = document.createElement("a");
    link.href = URL.createObjectURL(blob);
    link.download = "interpolation.gif";
    link.click();
    setTimeout(() => URL.revokeObjectURL(link.href), 0);
  }));

  // Typing an end's digit or id chooses that kind of end.
  for (const end of ["start", "end"]) {
    for (const [name, kind] of [["digit", "digit"], ["seed", "id"], ["index", "id"]]) {
      form.elements[`${end}-${name}`].addEventListener("input", () => { form.elements[`${end}-kind`].value = kind; });
    }
  }

  // Picking from the sample grid sets an end "by sample id", and the truncation it was drawn with (an id
  // names the same image only at the same truncation).
  return (end, id, psi) => {
    form.elements[`${end}-kind`].value = "id";
    form.elements[`${end}-seed`].value = id.seed;
    form.elements[`${end}-index`].value = id.index;
    const slider = byTestId("interp-truncation");
    slider.value = psi;
    slider.dispatchEvent(new Event("input"));
  };
}

// -- the server's state, in the header ---------------------------------------------------------------

async function checkHealth() {
  const line = $("#health");
  try {
    const response = await fetch("/health", { cache: "no-store" });
    const ready = response.ok;
    line.textContent = ready ? "server ready" : "the server is not ready: models are loading, or it is stopped (make serve)";
    line.className = `status ${ready ? "ok" : "bad"}`;
  } catch {
    line.textContent = `cannot reach the door at ${location.origin} (make door)`;
    line.className = "status bad";
  }
}

// -- start ------------------------------------------------------------------------------------------

takeKeyFromFragment();
$("#key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem(KEY_STORAGE, $("#key-input").value.trim());
  $("#key-input").value = "";
  $("#key-panel").hidden = true;
});
if (!apiKey()) askForKey();
palindromePanel();
samplePanel(interpolatePanel());
checkHealth();
setInterval(checkHealth, HEALTH_MS);
