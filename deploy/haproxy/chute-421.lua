-- chute-421.lua: the SMTP answer HAProxy gives a client address over its connection cap
-- (haproxy.cfg, frontend smtp). A plain `tcp-request connection reject` would be a TCP reset
-- with no reply, which a mail client reports as a network error and retries at once; this is
-- the reply chute itself gives (421 4.7.0, RFC 5321 section 3.8), then the connection closes.
core.register_service("chute_421", "tcp", function(applet)
  applet:send("421 4.7.0 Too many concurrent connections from this IP\r\n")
end)
