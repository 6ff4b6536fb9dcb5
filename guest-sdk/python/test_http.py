"""Unit tests of ``warden_sdk.http`` on plain CPython (no bindings).

The requests themselves are tested against a real loopback server, through
the host, in tests/integration/languages.rs.
"""

import unittest

from warden_sdk import http


class ErrorCode_HttpRequestDenied:  # the shape componentize-py generates
    pass


class ErrorCode_DestinationIpProhibited:
    pass


class ErrorCode_InternalError:
    def __init__(self, value):
        self.value = value


class HttpModuleTest(unittest.TestCase):
    def test_error_codes_read_as_their_wit_names_with_what_they_mean(self):
        denied = http._error(ErrorCode_HttpRequestDenied())
        self.assertEqual(denied.code, "HTTP-request-denied")
        self.assertIn("`http` grant", str(denied))
        private = http._error(ErrorCode_DestinationIpProhibited())
        self.assertEqual(private.code, "destination-IP-prohibited")
        self.assertIn("private = true", str(private))
        internal = http._error(ErrorCode_InternalError("timed out"))
        self.assertEqual(str(internal), "internal-error: the request failed (timed out)")

    def test_a_response_reads_headers_in_any_case_and_decodes_its_body(self):
        reply = http.Response(200, [("content-type", "application/json")], b'{"a": [1]}')
        self.assertEqual(reply.header("Content-Type"), "application/json")
        self.assertIsNone(reply.header("etag"))
        self.assertEqual(reply.json(), {"a": [1]})
        self.assertEqual(http.Response(200, [], b"\xffok").text(), "\ufffdok")

    def test_without_the_tool_http_bindings_a_request_says_which_world_to_build(self):
        with self.assertRaises(RuntimeError) as raised:
            http.request("https://example.com/")
        self.assertIn("tool-http", str(raised.exception))


if __name__ == "__main__":
    unittest.main()
