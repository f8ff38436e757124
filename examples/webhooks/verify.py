"""Checks a Herald webhook's signature (Standard Webhooks 1.0) with the
standard library only. A Flask, Django or FastAPI receiver can use
verify() as it is, with the raw request body."""
import base64, hashlib, hmac, json, sys, time


def verify(secret, headers, body, tolerance=300):
    msg_id, ts, sigs = (headers.get(k) for k in ("webhook-id", "webhook-timestamp", "webhook-signature"))
    if not (msg_id and ts and sigs):
        return False
    if abs(time.time() - int(ts)) > tolerance:  # replayed, or clock skew
        return False
    key = base64.b64decode(secret.removeprefix("whsec_"))
    want = base64.b64encode(hmac.new(key, f"{msg_id}.{ts}.".encode() + body, hashlib.sha256).digest()).decode()
    return any(hmac.compare_digest(s, "v1," + want) for s in sigs.split(" "))


if __name__ == "__main__":  # python3 verify.py SECRET < {"headers":{…},"body":"…"}
    req = json.load(sys.stdin)
    ok = verify(sys.argv[1], req["headers"], req["body"].encode())
    print("valid" if ok else "invalid")
    sys.exit(0 if ok else 1)
