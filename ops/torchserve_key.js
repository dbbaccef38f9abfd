// TorchServe's inference key, read by the door for every request it sends upstream (njs, ngx_http_js_module).
//
// ops/nginx.conf.template sets `js_var $torchserve_key_file <key_file.json>` and
// `js_set $torchserve_authorization torchserve_key.authorization`: the Authorization header the door sends
// TorchServe in place of the client's. TorchServe 0.12 replaces its inference key in place when it is renewed
// (`make rotate-keys`, the supervisor before the 24 h expiry) and refuses the old key at once; a key rendered
// into nginx's config was stale until the door had reloaded (325 of 2,566 requests failed over two renewals
// under 8 clients). Read per request, it is the current key from the moment TorchServe has written it.
//
// Why every request reads the file, rather than stat it and keep the key while its mtime stays: the njs of
// Debian bookworm (0.7.9) runs each request in a fresh copy of its VM, so nothing a request stores survives it
// (shared dictionaries came in 0.8). A stat, an open, a read of ~300 bytes and a JSON.parse cost about 7 us
// a request (measured with ab: 104,000 -> 60,500 answers/s of a bare `return`), against the ~0.6 ms that
// TorchServe spends on the cheapest prediction.
//
// TorchServe rewrites the file in place (truncate, then write): a read can catch it empty or half written.
// Such a read is tried again at once, a few times; then no key is sent (an empty header is left out), TorchServe
// refuses, and the door's retry (REST: `@retry_current_key`, `retry` below) or the client's (gRPC, on
// PERMISSION_DENIED) asks again with the key read anew.

const fs = require('fs');

const READS = 20; // attempts at a file caught mid-rewrite: the write is one syscall, so the next read sees it

function currentKey(path) {
    for (let i = 0; i < READS; i++) {
        let text;
        try {
            text = fs.readFileSync(path, 'utf8');
        } catch (e) {
            return ''; // no key file: TorchServe runs without token authorization, or it is restarting
        }
        try {
            const key = JSON.parse(text).inference.key;
            if (typeof key === 'string' && key.length > 0) {
                return key;
            }
        } catch (e) {
            // empty or half written: read it again
        }
    }
    return '';
}

// $torchserve_authorization: "Bearer <TorchServe's inference key>", or "" (then nginx sends no header).
function authorization(r) {
    const key = currentKey(r.variables.torchserve_key_file);
    return key ? 'Bearer ' + key : '';
}

// The door's retry of a REST prediction TorchServe answered 400 (location @retry_current_key, js_content).
//
// TorchServe renews its key in memory first and rewrites key_file.json after (truncate, then write; the
// management key's renewal right after rewrites it once more): a request can meet the new key in TorchServe
// while the file still holds the old one, or nothing at all. Asking again at once could carry the old key again,
// or none. So the retry waits, in steps of WAIT_STEP_MS (a timer: the worker serves everyone else meanwhile), at
// most WAIT_MAX_MS, while the file holds no key, or holds the very key that was refused and the 400 was
// TorchServe's own refusal (its frontend's answers lack the X-Model-Version header that every handler answer
// carries). Then (at once for a handler's 400, whose body nginx dropped when it intercepted it) it asks TorchServe
// again (@retry_with_current_key) with the key it read, handed over in $torchserve_authorization_retry (a js_var
// keeps its value across the redirect), and passes that answer on whatever it is.
const WAIT_STEP_MS = 20;
const WAIT_MAX_MS = 1000;

function retry(r) {
    const refused = r.variables.torchserve_authorization; // nginx keeps the value the first try sent
    const byHandler = r.variables.upstream_http_x_model_version;
    let waited = 0;
    function again() {
        const current = authorization(r);
        const stale = current === '' || (!byHandler && current === refused);
        if (stale && waited < WAIT_MAX_MS) {
            waited += WAIT_STEP_MS;
            setTimeout(again, WAIT_STEP_MS);
            return;
        }
        r.variables.torchserve_authorization_retry = current;
        r.internalRedirect('@retry_with_current_key');
    }
    again();
}

export default {authorization, retry};
