// usage.cc: chute-load's --help text.

#include "tools/chute-load/options.h"

namespace chute::load {

const char* Usage() {
  return R"USAGE(Usage: chute-load --target HOST:PORT [options]

chute-load drives many concurrent SMTP submission sessions against a relay (chuted or any
other) from one process: one io_uring per thread, no thread per connection. It reports
rates, latency percentiles (p50/p90/p99/p99.9/max, from a log-linear histogram with under 1%
relative error) and every unexpected reply by code. With --rate it runs open loop: message
send times are scheduled in advance and latency is measured from the scheduled time, so a
server stall shows in the percentiles instead of slowing the generator down.

Target and safety:
  --target HOST:PORT      numeric address: 127.0.0.1:587, [::1]:587 (required)
  --allow-remote          allow a target outside loopback (127.0.0.0/8, ::1); without it
                          chute-load refuses, so that a typo cannot load someone's server
Session:
  --tls MODE              none (default) | starttls | implicit (server certificates are not
                          verified: this is a load tool)
  --user ADDR             the AUTH identity (with --password-file or --token-file)
  --password-file FILE    AUTH PLAIN (or --auth login) with the password in FILE
  --token-file FILE       AUTH XOAUTH2 with the bearer token in FILE: the client sends
                          base64("user=ADDR^Aauth=Bearer TOKEN^A^A")
  --auth MECH             plain | login | xoauth2 | none (default: from the file given)
  --ehlo NAME             the EHLO name (chute-load.localdomain)
  --from ADDR             MAIL FROM and the From: header (app@example.test)
  --to ADDR               a recipient; repeatable; "{n}" expands to a counter (message
                          number x --rcpts + recipient index) (load@example.test)
  --rcpts N               recipients per message, cycling through the --to list (1; <= 1000)
  --size BYTES            message size: 512, 10k, 1m (1k; <= 64m)
  --size-dist LIST        sizes by weight: 1k:60,10k:30,1m:10
  --bdat                  send with BDAT n LAST (CHUNKING) instead of DATA
  --no-pipelining         one command at a time (default: MAIL, RCPT and DATA/BDAT are
                          pipelined when the server offers PIPELINING)
  --timeout S             longest wait for a reply, the connect or the handshake (30)
Load:
  --scenario NAME         persistent (default) | reconnect | burst | idle | caps (below)
  --connections N         concurrent connections (1; <= 100000)
  --messages N            total messages; the run ends when they are answered
  --messages-per-connection N   then QUIT and reconnect (persistent: unlimited)
  --duration S            stop starting messages after S seconds; with neither --messages
                          nor --duration a run lasts 60 s
  --rate MSG_PER_S        open loop at this rate; without it, closed loop (as fast as the
                          connections go)
  --max-errors N          stop the run early after N errors (100): a failing target is not
                          retried until the end time
  --threads N             threads, one ring each (default: online CPUs; idle and caps use 1)
  --server-pid PID        idle: the server process whose memory is measured
  --hold S                idle: how long to hold the sessions once all are open (1)
  --ip-cap N              caps: the server's connections_per_ip (100)
  --tenant-cap N          caps: its authenticated_connections_per_tenant (250)
Output:
  --json                  the summary as one JSON object (fields below)
  --no-progress           no progress line (it is printed every second to a terminal only)
  --help                  this text

Scenarios:
  persistent  --connections long-lived application connections, each sending message after
              message (reconnecting if one ends while work remains).
  reconnect   a printer: connect, TLS, AUTH, one message, QUIT, over and over on
              --connections connections at a time. With --rate a connection starts when a
              message falls due, so connect, TLS and AUTH count in its latency.
  burst       --connections connections opened at once, each sending
              --messages-per-connection (1) messages, then QUIT.
  idle        hold --connections idle sessions (EHLO done, TLS established, AUTH done when
              credentials are given); with --server-pid report the server's VmRSS
              (/proc/PID/status) and PSS (/proc/PID/smaps_rollup) before and once all are
              open, and the difference per connection. Beyond the server's per-IP cap
              (100) and per-tenant cap (250) sessions are refused and counted as errors:
              raise them, or exempt 127.0.0.1 (connections_per_ip_exempt), for large runs.
  caps        exceed the caps by --connections (1) attempts each: first --ip-cap + N
              unauthenticated sessions from one address, then (with credentials)
              --tenant-cap + N authenticated sessions spread over 127.0.0.2, 127.0.0.3, ...
              so that no address reaches the per-IP cap. Counts refusals by reply code
              (421 4.7.0, 454 4.7.0) and checks that exactly the cap was accepted.

Latencies (milliseconds in the text, microseconds in JSON):
  connect_to_banner   TCP connect started -> 220 (implicit TLS: includes the handshake)
  tls_handshake       ClientHello -> handshake complete
  auth                AUTH sent -> 235
  end_of_data_to_250  the message's last byte handed to the socket -> 250
  message             the scheduled send time (open loop) or MAIL sent (closed) -> 250

JSON fields: scenario, target, tls, auth, threads, connections, rate_target_per_s,
  elapsed_s, completed, messages, recipients, message_bytes, messages_per_s,
  recipients_per_s, mb_per_s, connections_started, connections_established,
  connections_per_s, banners, tls_handshakes, tls_handshakes_per_s, auths, sessions_ready,
  latency_us.{connect_to_banner,tls_handshake,auth,end_of_data_to_250,message}
  .{count,p50,p90,p99,p999,max}, errors {"<phase> <code> <enhanced>": count, ...},
  error_total, exit_code; idle: memory.{server_pid, connections, rss_before_bytes,
  rss_after_bytes, rss_per_connection_bytes, pss_before_bytes, pss_after_bytes,
  pss_per_connection_bytes}; caps: caps.{ip,tenant}.{cap, attempted, accepted,
  refused {"<code> <enhanced>": count}, exact}.
  Error keys: "<phase> <code> <enhanced>" for an unexpected reply (phases: banner, ehlo,
  starttls, auth, mail, rcpt, data, bdat, end-of-data), "<phase> timeout", "<phase> closed",
  "connect <ERRNO>", "tls handshake failed", "protocol <what>".

Examples:
  chute-load --target 127.0.0.1:587 --tls starttls --user app@example.test \
    --password-file pw --connections 50 --duration 30
  chute-load --target 127.0.0.1:587 --tls starttls --user app@example.test \
    --password-file pw --scenario reconnect --connections 20 --rate 200 --duration 10
  chute-load --target 127.0.0.1:2525 --size-dist 1k:60,10k:30,1m:10 --rcpts 5 \
    --to 'user{n}@example.test' --messages 10000 --json
  chute-load --target 127.0.0.1:465 --tls implicit --scenario idle --connections 1000 \
    --server-pid "$(pidof chuted)"
  chute-load --target 127.0.0.1:587 --tls starttls --user app@example.test \
    --password-file pw --scenario caps --ip-cap 100 --tenant-cap 250 --connections 5

Exit status: 0 the run completed and every reply was the expected one (caps: both caps
exact); 1 usage error; 2 the target failed: refused or dropped connections, timeouts or
unexpected replies (all counted in the summary, never hidden), a cap not exact, or the run
could not be carried out.
)USAGE";
}

}  // namespace chute::load
