"""The access log: one record per request, stamped with the time the request arrived.

Records are written by a background thread (QueueHandler + QueueListener), so the time a line
is written says nothing about the request; the record's own time must be its arrival.
"""

import contextlib
import functools
import io
import logging
import re
import sys
import socket
import threading
import time
import unittest

import appserver
from tests.support import start_app_server, stop_app_server


class Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records = []
        self.records_lock = threading.Lock()

    def emit(self, record):
        with self.records_lock:
            self.records.append(record)

    def find(self, text):
        with self.records_lock:
            return [r for r in self.records if text in r.getMessage()]


class ArrivalTime(unittest.TestCase):

    def setUp(self):
        self.records = Records()
        logger = logging.getLogger("appserver.access")
        logger.addHandler(self.records)
        self.addCleanup(logger.removeHandler, self.records)
        self.old_level = logger.level
        logger.setLevel(logging.INFO)
        self.addCleanup(logger.setLevel, self.old_level)
        self.server, _ = start_app_server(appserver.Config(), idle_timeout=5, request_timeout=10)
        self.addCleanup(stop_app_server, self.server)
        self.port = self.server.server_address[1]

    def wait_for(self, path):
        """The record is queued just after the answer is sent: wait for it, then flush."""
        deadline = time.monotonic() + 5
        while not self.records.find(path) and time.monotonic() < deadline:
            self.server.access_log.flush()
            time.sleep(0.01)

    def exchange(self, sock, rest):
        sock.sendall(rest)
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
        return answer

    def test_a_slow_request_is_stamped_when_it_arrived_not_when_it_was_logged(self):
        slow = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        self.addCleanup(slow.close)
        sent_slow = time.time()
        slow.sendall(b"GET /slow HTTP/1.1\r\n")  # the request line arrives now...
        time.sleep(0.6)
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as fast:
            sent_fast = time.time()
            self.assertIn(b" 404 ", self.exchange(fast, b"GET /fast HTTP/1.1\r\nHost: x\r\n"
                                                       b"Connection: close\r\n\r\n"))
        time.sleep(0.6)
        answered_slow = time.time()
        self.assertIn(b" 404 ", self.exchange(slow, b"Host: x\r\n\r\n"))  # ...and ends now
        self.wait_for("/slow")
        (slow_record,), (fast_record,) = self.records.find("/slow"), self.records.find("/fast")
        self.assertAlmostEqual(slow_record.created, sent_slow, delta=0.3)
        self.assertLess(slow_record.created, answered_slow - 0.9)
        self.assertAlmostEqual(fast_record.created, sent_fast, delta=0.3)
        self.assertLess(slow_record.created, fast_record.created)
        # The elapsed time still covers the whole request.
        self.assertGreaterEqual(float(slow_record.getMessage().split()[-1].rstrip("ms")), 1000)

    def test_every_request_is_recorded_once_without_its_query(self):
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
            for i in range(20):
                self.exchange(sock, b"GET /n%d?token=s3cret HTTP/1.1\r\nHost: x\r\n\r\n" % i)
        self.wait_for("/n19")
        for i in range(20):
            records = self.records.find('"GET /n%d"' % i)
            self.assertEqual(len(records), 1, [r.getMessage() for r in self.records.records][:5])
            self.assertNotIn("s3cret", records[0].getMessage())


class CountingStream:
    """A text stream that records each write; its first write waits for ``release``."""

    def __init__(self):
        self.writes = []
        self.first_write = threading.Event()
        self.release = threading.Event()

    def write(self, text):
        if not self.writes:
            self.first_write.set()
            self.release.wait(5)
        self.writes.append(text)

    def flush(self):
        pass


class BatchedWrites(unittest.TestCase):
    """Lines that pile up behind a slow sink go out in a few writes, all of them, in order."""

    def setUp(self):
        self.stream = CountingStream()
        self.handler = appserver.BatchingStreamHandler(self.stream)
        self.handler.setFormatter(logging.Formatter("%(message)s"))
        self.logger = logging.getLogger("test.batched.%d" % id(self))
        self.logger.propagate = False
        self.logger.setLevel(logging.INFO)
        self.logger.addHandler(self.handler)
        self.access_log = appserver.AccessLogQueue(self.logger)
        self.addCleanup(self.access_log.close)
        self.addCleanup(self.stream.release.set)

    def test_a_backlog_is_written_in_batches_of_at_most_64_lines_in_order(self):
        self.access_log.record(time.time(), "127.0.0.1", "GET", "/first", 200, 1, 0.1)
        self.assertTrue(self.stream.first_write.wait(5))
        for i in range(200):  # the writer is stuck in its first write: these queue up
            self.access_log.record(time.time(), "127.0.0.1", "GET", "/n%d" % i, 200, 1, 0.1)
        self.stream.release.set()
        self.assertTrue(self.access_log.flush(5))
        text = "".join(self.stream.writes)
        self.assertEqual(re.findall(r'"GET (\S+)"', text),
                         ["/first"] + ["/n%d" % i for i in range(200)])
        self.assertEqual(text.count("\n"), 201)
        self.assertEqual(len(self.stream.writes), 1 + 4, [w.count("\n") for w in self.stream.writes])
        self.assertLessEqual(max(w.count("\n") for w in self.stream.writes), 64)

    def test_on_the_plain_route_too(self):
        self.handler.setFormatter(appserver.LogFormatter())  # as python appserver.py logs
        self.assertIs(appserver.plain_access_route(self.logger), self.handler)
        self.test_a_backlog_is_written_in_batches_of_at_most_64_lines_in_order()

    def test_a_line_from_any_other_thread_is_written_at_once(self):
        self.stream.release.set()
        self.logger.warning("from a request thread")
        self.assertEqual(self.stream.writes, ["from a request thread\n"])


class SinkStalledAt(logging.Handler):
    """Keeps each record's path; stalls on the first record whose path is ``stall_at``."""

    def __init__(self, stall_at):
        super().__init__()
        self.stall_at = stall_at
        self.paths = []
        self.stalled = threading.Event()
        self.resume = threading.Event()

    def handle(self, record):
        # Without Handler's lock: a thread stalled here must not hold up the others on it.
        self.emit(record)
        return True

    def emit(self, record):
        path = record.args[2] if len(record.args) == 7 else record.getMessage()
        if path == self.stall_at and not self.stalled.is_set():
            self.stalled.set()
            self.resume.wait(10)
        self.paths.append(path)


class RequestThreadsHelp(unittest.TestCase):
    """Past ACCESS_LOG_HELP_AT waiting records, the threads that queue lines write a batch of
    the backlog too, so a busy CPU does not leave the writer thread behind and dropping."""

    def setUp(self):
        self.sink = SinkStalledAt("/stall")
        self.logger = logging.getLogger("test.help.%d" % id(self))
        self.logger.propagate = False
        self.logger.setLevel(logging.INFO)
        self.logger.addHandler(self.sink)
        self.access_log = appserver.AccessLogQueue(self.logger)
        self.access_log.listener.stop()  # no writer thread until start_writer(): only helpers
        self.writer_started = False
        self.addCleanup(self.access_log.close)
        self.addCleanup(lambda: self.writer_started or self.start_writer())
        self.addCleanup(self.sink.resume.set)

    def start_writer(self):
        self.writer_started = True
        self.access_log.listener.start()

    def record(self, path, **options):
        self.access_log.record(time.time(), "127.0.0.1", "GET", path, 200, 1, 0.1, **options)

    def in_thread(self, function):
        thread = threading.Thread(target=function, daemon=True)
        thread.start()
        return thread

    def test_a_backlog_past_the_threshold_is_written_by_request_threads_in_order(self):
        paths = ["/n%d" % i for i in range(appserver.ACCESS_LOG_HELP_AT + 200)]
        for path in paths[:appserver.ACCESS_LOG_HELP_AT - 1]:
            self.record(path)
        self.assertEqual(self.sink.paths, [])  # below the threshold: left to the writer
        for path in paths[appserver.ACCESS_LOG_HELP_AT - 1:]:
            self.record(path)
        waiting = self.access_log.handler.queue.qsize()
        self.assertLess(waiting, appserver.ACCESS_LOG_HELP_AT)
        self.assertEqual(self.sink.paths, paths[:len(paths) - waiting])
        self.start_writer()
        self.assertTrue(self.access_log.flush(5))
        self.assertEqual(self.sink.paths, paths)
        self.assertEqual(self.access_log.handler.dropped, 0)

    def fill_to_the_threshold(self):
        for i in range(appserver.ACCESS_LOG_HELP_AT):
            self.record("/n%d" % i, may_help=False)
        self.assertEqual(self.sink.paths, [])

    def serve_with_this_access_log(self):
        server, _ = start_app_server(appserver.Config())
        own = server.access_log
        server.access_log = self.access_log
        self.addCleanup(own.close)
        self.addCleanup(stop_app_server, server)
        return server

    def test_the_accept_loop_never_helps(self):
        server = self.serve_with_this_access_log()
        self.fill_to_the_threshold()
        refused, peer = socket.socketpair()
        self.addCleanup(peer.close)
        server._refuse_over_capacity(refused, ("127.0.0.1", 1))
        self.assertIn(b" 503 ", peer.recv(4096))
        self.assertEqual(self.sink.paths, [])
        self.assertEqual(self.access_log.handler.queue.qsize(), appserver.ACCESS_LOG_HELP_AT + 1)

    def test_a_request_answered_while_the_server_stops_does_not_help(self):
        server = self.serve_with_this_access_log()
        self.fill_to_the_threshold()
        with socket.create_connection(server.server_address, timeout=5) as sock:
            sock.sendall(b"GET /late HTTP/1.1\r\n")
            deadline = time.monotonic() + 5
            while not any(not idle for _, idle in server._watched.values()):
                self.assertLess(time.monotonic(), deadline, "the request line was not read")
                time.sleep(0.005)
            server.stopping = True
            sock.sendall(b"Host: x\r\n\r\n")
            self.assertIn(b" 404 ", sock.recv(4096))
        deadline = time.monotonic() + 5
        while self.access_log.handler.queue.qsize() == appserver.ACCESS_LOG_HELP_AT:
            self.assertLess(time.monotonic(), deadline, "no access-log record")
            time.sleep(0.005)
        self.assertEqual(self.sink.paths, [])

    def test_a_line_that_fails_to_log_is_counted_and_the_rest_are_written(self):
        def refuse_bad(record):
            if record.args[2:3] == ("/bad",):
                raise ValueError("a filter that raises")
            return True
        self.logger.addFilter(refuse_bad)
        self.record("/bad", may_help=False)
        for i in range(appserver.ACCESS_LOG_HELP_AT - 1):
            self.record("/n%d" % i)  # the last one helps, and takes /bad first
        self.assertEqual(self.sink.paths, ["/n%d" % i for i in range(len(self.sink.paths))])
        self.assertGreater(len(self.sink.paths), 0)
        self.assertEqual(self.access_log.handler.dropped, 1)
        self.start_writer()
        self.record("/bad", may_help=False)  # reports the first, and fails in the writer
        self.record("/last", may_help=False)
        self.assertTrue(self.access_log.flush(5))
        self.assertEqual(self.sink.paths[-2:], ["1 access-log lines dropped: log output too "
                                                "slow or failing", "/last"])
        self.assertEqual(len(self.sink.paths), appserver.ACCESS_LOG_HELP_AT + 1)
        self.assertEqual(self.access_log.handler.dropped, 1)  # the writer thread's, counted

    def test_a_stalled_sink_holds_up_one_helper_and_the_other_threads_go_on(self):
        self.record("/stall")
        for i in range(appserver.ACCESS_LOG_HELP_AT - 2):
            self.record("/n%d" % i)
        helper = self.in_thread(lambda: self.record("/helps"))
        self.assertTrue(self.sink.stalled.wait(5))
        other = self.in_thread(lambda: [self.record("/more%d" % i) for i in range(100)])
        other.join(5)
        self.assertFalse(other.is_alive(), "a second thread waited on the stalled sink")
        self.assertTrue(helper.is_alive())
        self.sink.resume.set()
        helper.join(5)
        self.start_writer()
        self.assertTrue(self.access_log.flush(5))
        self.assertEqual(len(self.sink.paths), appserver.ACCESS_LOG_HELP_AT + 100)
        self.assertEqual(self.sink.paths[0], "/stall")

    def test_a_flush_marker_is_left_for_the_writer_thread(self):
        for i in range(5):
            self.record("/before%d" % i)
        flushed = []
        flusher = self.in_thread(lambda: flushed.append(self.access_log.flush(5)))
        while self.access_log.handler.queue.qsize() < 6:
            time.sleep(0.001)
        for i in range(appserver.ACCESS_LOG_HELP_AT):
            self.record("/after%d" % i)
        self.assertEqual(self.sink.paths, ["/before%d" % i for i in range(5)])
        self.assertEqual(flushed, [])
        self.start_writer()
        flusher.join(5)
        self.assertEqual(flushed, [True])
        self.assertTrue(self.access_log.flush(5))
        self.assertEqual(len(self.sink.paths), 5 + appserver.ACCESS_LOG_HELP_AT)

    def test_a_flush_waits_for_the_lines_a_request_thread_is_writing(self):
        self.record("/stall")  # the first record: a helper takes it, and stalls on it
        for i in range(appserver.ACCESS_LOG_HELP_AT - 2):
            self.record("/n%d" % i)
        helper = self.in_thread(lambda: self.record("/helps"))
        self.assertTrue(self.sink.stalled.wait(5))
        self.start_writer()  # the writer writes everything else...
        self.assertFalse(self.access_log.flush(0.5))  # ...but the helper's batch is not written
        self.sink.resume.set()
        self.assertTrue(self.access_log.flush(5))
        helper.join(5)
        self.assertCountEqual(self.sink.paths, ["/stall", "/helps"] + [
            "/n%d" % i for i in range(appserver.ACCESS_LOG_HELP_AT - 2)])


class StringStream:
    def __init__(self):
        self.text = []

    def write(self, text):
        self.text.append(text)

    def flush(self):
        pass


class PlainRoute(unittest.TestCase):
    """With python appserver.py's own setup (one BatchingStreamHandler and a LogFormatter),
    the writer formats each line itself: the lines must be those logging would have written.
    Anything else on the way (a filter, another handler, another formatter) goes through
    logging."""

    def make_logger(self, name):
        logger = logging.getLogger("test.route.%s.%d" % (name, id(self)))
        logger.propagate = False
        logger.setLevel(logging.INFO)
        handler = appserver.BatchingStreamHandler(StringStream())
        handler.setFormatter(appserver.LogFormatter())
        logger.addHandler(handler)
        return logger, handler

    def lines(self, logger):
        access_log = appserver.AccessLogQueue(logger)
        for i, arrived in enumerate((1700000000.25, 1700000000.9996, 1700000001.0,
                                     1700000000.5, 1700003600.0005)):
            access_log.record(arrived, "127.0.0.1", "GET", "/p%d" % i, 200, 10 * i, 1.25 * i,
                              "object=a size=%d" % i if i % 2 else "")
        access_log.handler.dropped = 3  # reported on the next record, as a WARNING line
        access_log.record(1700000002.5, "::1", "POST", "/\x1b[31m", 400, 0, 0.05)
        self.assertTrue(access_log.flush(5))
        access_log.close()
        # The dropped-lines warning is stamped when it is made, not with an arrival time.
        return re.sub(r"^[-0-9]+ [:0-9]+,[0-9]+ WARNING", "<time> WARNING",
                      "".join(logger.handlers[0].stream.text), flags=re.M)

    def test_the_writers_lines_are_the_lines_logging_writes(self):
        logger, handler = self.make_logger("same")
        self.assertIs(appserver.plain_access_route(logger), handler)
        ours = self.lines(logger)
        handler.stream.text.clear()
        logger.addFilter(lambda record: True)  # changes nothing, but takes logging's route
        self.assertIsNone(appserver.plain_access_route(logger))
        self.assertEqual(ours, self.lines(logger))
        self.assertEqual(ours.count("\n"), 7)
        self.assertIn("<time> WARNING", ours)
        self.assertIn(",999 INFO", ours)

    def test_request_threads_help_on_the_plain_route_a_batch_to_a_write(self):
        logger, handler = self.make_logger("help")
        access_log = appserver.AccessLogQueue(logger)
        access_log.listener.stop()  # no writer thread: only request threads write
        paths = ["/n%d" % i for i in range(appserver.ACCESS_LOG_HELP_AT + 100)]
        for path in paths:
            access_log.record(time.time(), "127.0.0.1", "GET", path, 200, 1, 0.1)
        writes = list(handler.stream.text)
        self.assertTrue(writes)
        self.assertEqual({write.count("\n") for write in writes}, {64})
        self.assertEqual(re.findall(r'"GET (\S+)"', "".join(writes)), paths[:64 * len(writes)])
        access_log.listener.start()
        self.assertTrue(access_log.flush(5))
        access_log.close()
        self.assertEqual(re.findall(r'"GET (\S+)"', "".join(handler.stream.text)), paths)

    def test_an_embedders_logger_class_or_method_still_sees_every_line(self):
        def redact(logger, record):
            record.msg, record.args = record.getMessage().replace("secret", "***"), ()
            logging.Logger.callHandlers(logger, record)

        class Redacting(logging.Logger):
            callHandlers = redact

        for make in (lambda: Redacting("test.route.redacting"),
                     lambda: self.make_logger("instance")[0]):
            logger = make()
            if type(logger) is Redacting:
                logger.setLevel(logging.INFO)
                handler = appserver.BatchingStreamHandler(StringStream())
                handler.setFormatter(appserver.LogFormatter())
                logger.addHandler(handler)
            else:
                logger.callHandlers = functools.partial(redact, logger)
            self.assertIsNone(appserver.plain_access_route(logger))
            access_log = appserver.AccessLogQueue(logger)
            access_log.record(time.time(), "127.0.0.1", "GET", "/secret", 200, 1, 0.1)
            self.assertTrue(access_log.flush(5))
            access_log.close()
            text = "".join(logger.handlers[0].stream.text)
            self.assertIn('"GET /***"', text)
            self.assertNotIn("secret", text)

    def test_a_sink_that_fails_is_reported_as_logging_reports_it_and_counted(self):
        logger, handler = self.make_logger("failing")

        def write(text):
            raise OSError(28, "No space left on device")
        handler.stream.write = write
        access_log = appserver.AccessLogQueue(logger)
        self.addCleanup(access_log.close)
        stderr = io.StringIO()
        with contextlib.redirect_stderr(stderr):
            access_log.record(time.time(), "127.0.0.1", "GET", "/lost", 200, 1, 0.1)
            self.assertTrue(access_log.flush(5))
        self.assertIn("--- Logging error ---", stderr.getvalue())
        self.assertIn("No space left on device", stderr.getvalue())
        self.assertEqual(access_log.handler.dropped, 1)

    def test_a_child_logger_reaches_its_parents_handler(self):
        parent, handler = self.make_logger("parent")
        child = logging.getLogger(parent.name + ".access")
        self.assertIs(appserver.plain_access_route(child), handler)
        child.propagate = False
        self.assertIsNone(appserver.plain_access_route(child))

    def test_a_filter_another_handler_or_formatter_takes_loggings_route(self):
        for change in (lambda logger, handler: logger.addFilter(lambda r: True),
                       lambda logger, handler: handler.addFilter(lambda r: True),
                       lambda logger, handler: logger.addHandler(logging.NullHandler()),
                       lambda logger, handler: handler.setFormatter(logging.Formatter()),
                       lambda logger, handler: handler.setLevel(logging.WARNING)):
            logger, handler = self.make_logger("changed")
            change(logger, handler)
            self.assertIsNone(appserver.plain_access_route(logger))

    def test_a_filter_added_while_serving_sees_the_next_lines(self):
        logger, handler = self.make_logger("later")
        access_log = appserver.AccessLogQueue(logger)
        self.addCleanup(access_log.close)
        access_log.record(time.time(), "127.0.0.1", "GET", "/before", 200, 1, 0.1)
        self.assertTrue(access_log.flush(5))
        handler.addFilter(lambda record: "/secret" not in record.getMessage())
        for path in ("/secret", "/after"):
            access_log.record(time.time(), "127.0.0.1", "GET", path, 200, 1, 0.1)
        self.assertTrue(access_log.flush(5))
        text = "".join(handler.stream.text)
        self.assertIn("/before", text)
        self.assertIn("/after", text)
        self.assertNotIn("/secret", text)


class LineFormat(unittest.TestCase):
    """python appserver.py formats its lines with LogFormatter, which formats the date and
    time once a second: its lines must be logging.Formatter's, to the millisecond."""

    def record(self, created, exc_info=None):
        record = logging.LogRecord("appserver.access", logging.INFO, __file__, 1,
                                   '%s "%s %s"', ("127.0.0.1", "GET", "/"), exc_info)
        record.created, record.msecs = created, (created % 1) * 1000
        return record

    def test_lines_match_logging_formatter_as_seconds_go_forward_and_back(self):
        # Access-log records carry arrival times, so they reach the formatter out of order.
        ours, stdlib = appserver.LogFormatter(), logging.Formatter(appserver.LOG_FORMAT)
        for created in (1700000000.25, 1700000000.999, 1700000001.0, 1700000000.5,
                        1700003600.75, time.time()):
            record = self.record(created)
            self.assertEqual(ours.format(record), stdlib.format(record))
        self.assertRegex(ours.format(self.record(1700000000.25)),
                         r'^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,250 INFO appserver.access: '
                         r'127.0.0.1 "GET /"$')

    def test_a_traceback_is_kept(self):
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            record = self.record(1700000000.5, exc_info=sys.exc_info())
        line = appserver.LogFormatter().format(record)
        self.assertIn("Traceback", line)
        self.assertIn("RuntimeError: boom", line)


if __name__ == "__main__":
    unittest.main()
