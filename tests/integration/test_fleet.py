"""Three chuted nodes and a real Redis keep authenticated_connections_per_tenant (250) for the
whole fleet: exactly 250 sessions of a tenant authenticate across the nodes; a SIGKILLed node's
places come back within lease_s and its spool is replayed when it returns; with Redis stopped,
killed and restarted empty the fleet never passes 250 and is exact again once Redis is back."""

import time

from fleet_fixture import FleetFixture

OK = b"235 2.7.0 Authentication successful\r\n"
CAP = b"454 4.7.0 Too many authenticated connections for this tenant, try again later\r\n"


class FleetCapTest(FleetFixture):
    # Node 2's mail waits in its spool (its delivery target refuses), so that a SIGKILL finds
    # an acknowledged message there.
    node_extra = {2: """
[delivery]
backend = "smtp"
target = "127.0.0.1:9"
retry_initial_s = 3600
"""}

    def open_until_refused(self, nodes, sources, limit):
        """AUTH round robin over `nodes` until one is refused with 454 (or `limit` are open):
        (sessions admitted, the first refusal's node or None)."""
        sessions = []
        for i in range(limit):
            node = nodes[i % len(nodes)]
            tls, line = node.auth(sources[i % len(sources)])
            if line == CAP:
                tls.close()
                return sessions, node
            self.assertEqual(line, OK, f"session {i} on node{node.index}")
            sessions.append((node, tls))
        return sessions, None

    def test_260_sessions_over_three_nodes_and_a_killed_node(self):
        sources = [f"127.0.1.{i}" for i in range(1, 5)]
        replies = {OK: 0, CAP: 0}
        sessions = []
        for i in range(260):
            node = self.nodes[i % 3]
            tls, line = node.auth(sources[i % 4])
            self.assertIn(line, replies, f"session {i} on node{node.index}: {line!r}")
            replies[line] += 1
            sessions.append((node, tls, line))
        self.assertEqual(replies[OK], 250)
        self.assertEqual(replies[CAP], 10)
        self.assertEqual(self.redis.sessions("example.test"), 250)
        # A refused session stays, unauthenticated.
        refused = next(tls for _, tls, line in sessions if line == CAP)
        refused.sendall(b"MAIL FROM:<app@example.test>\r\n")
        self.assertEqual(refused.recv(1024), b"530 5.7.57 Client not authenticated to send mail\r\n")

        # An acknowledged message on node 2, then node 2 dies.
        victim = self.nodes[2]
        tls = next(tls for node, tls, line in sessions if node is victim and line == OK)
        tls.sendall(b"MAIL FROM:<app@example.test>\r\nRCPT TO:<ann@example.test>\r\nDATA\r\n")
        f = tls.makefile("rb")
        for _ in range(3):
            f.readline()
        tls.sendall(b"From: app@example.test\r\nSubject: kept\r\n\r\nacknowledged\r\n.\r\n")
        self.assertTrue(f.readline().startswith(b"250 2.0.0"))
        held_by_victim = sum(1 for node, _, line in sessions if node is victim and line == OK)
        victim.kill()
        for node, tls, _ in sessions:
            tls.close()
        del sessions
        # The others' sessions end cleanly and give their places back at once; the dead node's
        # expire within lease_s.
        self.assertGreater(held_by_victim, 0)
        end = time.monotonic() + self.lease_s + 3
        while self.redis.sessions("example.test") != 0 and time.monotonic() < end:
            time.sleep(0.1)
        self.assertEqual(self.redis.sessions("example.test"), 0)
        # The tenant gets all 250 places on the two nodes that are left.
        alive = self.nodes[:2]
        again, refused_on = self.open_until_refused(alive, sources, 260)
        self.assertEqual(len(again), 250)
        self.assertIsNotNone(refused_on)
        for _, tls in again:
            tls.close()
        # The dead node comes back and replays its spool: the acknowledged message is queued.
        victim.start()
        victim.wait_metric("chute_spool_messages", 1)
        queued = victim.ctl("queue", "list", "--json").stdout
        self.assertIn("ann@example.test", queued)
        # Each node owns its queue: the text output says whose it is.
        self.assertTrue(victim.ctl("queue", "list").stdout.startswith("Node node2:\n"))

    def test_redis_stopped_then_killed_and_restarted_empty(self):
        sources = [f"127.0.2.{i}" for i in range(1, 5)]
        # 60 sessions while Redis answers.
        sessions, refused_on = self.open_until_refused(self.nodes, sources, 60)
        self.assertIsNone(refused_on)
        self.redis.pause()
        try:
            # Each node now keeps to its share: 250 // 3 = 83 of its own sessions.
            more, _ = self.open_until_refused(self.nodes, sources, 300)
            total = len(sessions) + len(more)
            self.assertLessEqual(total, 250)
            self.assertEqual(total, 3 * 83)
            sessions += more
            for node in self.nodes:
                tls, line = node.auth(sources[0])
                self.assertEqual(line, CAP, f"node{node.index} over its share")
                tls.close()
                self.assertEqual(node.metrics()["chute_fleet_redis_up"], 0)
                self.assertEqual(node.metrics()["chute_fleet_tenant_share"], 83)
            # Sessions keep working: a message from one admitted while Redis was away.
            _, tls = sessions[-1]
            tls.sendall(b"MAIL FROM:<app@example.test>\r\n")
            self.assertTrue(tls.recv(1024).startswith(b"250"))
            tls.sendall(b"RSET\r\n")
            tls.recv(1024)
        finally:
            self.redis.resume()
        self.redis.kill()
        self.redis.start()  # empty
        # The nodes find it again and put their live sessions back.
        end = time.monotonic() + 10
        while self.redis.sessions("example.test") != len(sessions) and time.monotonic() < end:
            time.sleep(0.1)
        self.assertEqual(self.redis.sessions("example.test"), len(sessions))
        for node in self.nodes:
            node.wait_metric("chute_fleet_redis_up", 1)
        # Exact again: one more place in the whole fleet.
        more, refused_on = self.open_until_refused(self.nodes, sources, 10)
        self.assertEqual(len(sessions) + len(more), 250)
        self.assertIsNotNone(refused_on)
        for _, tls in sessions + more:
            tls.close()
