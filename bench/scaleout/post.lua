-- wrk script: POST a new product (one committed write + one change-log row per request)
wrk.method = "POST"
wrk.body = '{"name":"chair","price":49.5,"currency":"EUR","tags":["wood"]}'
wrk.headers["Content-Type"] = "application/json"
