"""SigV4 against AWS's published test suite (the vectors aws-c-auth keeps under
tests/aws-signing-test-suite/v4, credentials AKIDEXAMPLE, region us-east-1, service
`service`, 2015-08-30T12:36:00Z): each vector's canonical request, string to sign and
signature, byte for byte."""

from __future__ import annotations

import hashlib
from calendar import timegm
from typing import NamedTuple
from urllib.parse import urlsplit

import pytest

from llm_cascade.providers import sigv4

CREDENTIALS = sigv4.Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
DATE = "20150830T123600Z"
NOW = float(timegm((2015, 8, 30, 12, 36, 0)))


class Vector(NamedTuple):
    name: str
    method: str
    target: str  # the path and query as the request line has them
    headers: list[tuple[str, str]]
    body: str
    token: str | None
    sign_body: bool  # the suite's signer adds and signs x-amz-content-sha256
    canonical_request: str
    string_to_sign: str
    signature: str


VECTORS = [
    Vector(
        "get-vanilla",
        "GET",
        "/",
        [("Host", "example.amazonaws.com")],
        "",
        None,
        False,
        (
            "GET\n"
            "/\n"
            "\n"
            "host:example.amazonaws.com\n"
            "x-amz-date:20150830T123600Z\n"
            "\n"
            "host;x-amz-date\n"
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        ),
        (
            "AWS4-HMAC-SHA256\n"
            "20150830T123600Z\n"
            "20150830/us-east-1/service/aws4_request\n"
            "bb579772317eb040ac9ed261061d46c1f17a8133879d6129b6e1c25292927e63"
        ),
        "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
    ),
    Vector(
        "get-vanilla-query-order-key-case",
        "GET",
        "/?Param2=value2&Param1=value1",
        [("Host", "example.amazonaws.com")],
        "",
        None,
        False,
        (
            "GET\n"
            "/\n"
            "Param1=value1&Param2=value2\n"
            "host:example.amazonaws.com\n"
            "x-amz-date:20150830T123600Z\n"
            "\n"
            "host;x-amz-date\n"
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        ),
        (
            "AWS4-HMAC-SHA256\n"
            "20150830T123600Z\n"
            "20150830/us-east-1/service/aws4_request\n"
            "816cd5b414d056048ba4f7c5386d6e0533120fb1fcfa93762cf0fc39e2cf19e0"
        ),
        "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500",
    ),
    Vector(
        "get-vanilla-empty-query-key",
        "GET",
        "/?Param1=value1",
        [("Host", "example.amazonaws.com")],
        "",
        None,
        False,
        (
            "GET\n"
            "/\n"
            "Param1=value1\n"
            "host:example.amazonaws.com\n"
            "x-amz-date:20150830T123600Z\n"
            "\n"
            "host;x-amz-date\n"
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        ),
        (
            "AWS4-HMAC-SHA256\n"
            "20150830T123600Z\n"
            "20150830/us-east-1/service/aws4_request\n"
            "1e24db194ed7d0eec2de28d7369675a243488e08526e8c1c73571282f7c517ab"
        ),
        "a67d582fa61cc504c4bae71f336f98b97f1ea3c7a6bfe1b6e45aec72011b9aeb",
    ),
    Vector(
        "get-unreserved",
        "GET",
        "/-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
        [("Host", "example.amazonaws.com")],
        "",
        None,
        False,
        (
            "GET\n"
            "/-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz\n"
            "\n"
            "host:example.amazonaws.com\n"
            "x-amz-date:20150830T123600Z\n"
            "\n"
            "host;x-amz-date\n"
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        ),
        (
            "AWS4-HMAC-SHA256\n"
            "20150830T123600Z\n"
            "20150830/us-east-1/service/aws4_request\n"
            "6a968768eefaa713e2a6b16b589a8ea192661f098f37349f4e2c0082757446f9"
        ),
        "07ef7494c76fa4850883e2b006601f940f8a34d404d0cfa977f52a65bbf5f24f",
    ),
    Vector(
        "get-utf8",
        "GET",
        "/ሴ",
        [("Host", "example.amazonaws.com")],
        "",
        None,
        False,
        (
            "GET\n"
            "/%E1%88%B4\n"
            "\n"
            "host:example.amazonaws.com\n"
            "x-amz-date:20150830T123600Z\n"
            "\n"
            "host;x-amz-date\n"
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        ),
        (
            "AWS4-HMAC-SHA256\n"
            "20150830T123600Z\n"
            "20150830/us-east-1/service/aws4_request\n"
            "2a0a97d02205e45ce2e994789806b19270cfbbb0921b278ccf58f5249ac42102"
        ),
        "8318018e0b0f223aa2bbf98705b62bb787dc9c0e678f255a891fd03141be5d85",
    ),
    Vector(
        "get-vanilla-utf8-query",
        "GET",
        "/?ሴ=bar",
        [("Host", "example.amazonaws.com")],
        "",
        None,
        False,
        (
            "GET\n"
            "/\n"
            "%E1%88%B4=bar\n"
            "host:example.amazonaws.com\n"
            "x-amz-date:20150830T123600Z\n"
            "\n"
            "host;x-amz-date\n"
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        ),
        (
            "AWS4-HMAC-SHA256\n"
            "20150830T123600Z\n"
            "20150830/us-east-1/service/aws4_request\n"
            "eb30c5bed55734080471a834cc727ae56beb50e5f39d1bff6d0d38cb192a7073"
        ),
        "2cdec8eed098649ff3a119c94853b13c643bcf08f8b0a1d91e12c9027818dd04",
    ),
    Vector(
        "get-space-unnormalized",
        "GET",
        "/example space/",
        [("Host", "example.amazonaws.com")],
        "",
        None,
        False,
        (
            "GET\n"
            "/example%20space/\n"
            "\n"
            "host:example.amazonaws.com\n"
            "x-amz-date:20150830T123600Z\n"
            "\n"
            "host;x-amz-date\n"
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        ),
        (
            "AWS4-HMAC-SHA256\n"
            "20150830T123600Z\n"
            "20150830/us-east-1/service/aws4_request\n"
            "63ee75631ed7234ae61b5f736dfc7754cdccfedbff4b5128a915706ee9390d86"
        ),
        "652487583200325589f1fba4c7e578f72c47cb61beeca81406b39ddec1366741",
    ),
    Vector(
        "get-header-value-trim",
        "GET",
        "/",
        [
            ("Host", "example.amazonaws.com"),
            ("My-Header1", " value1"),
            ("My-Header2", ' "a   b   c"'),
        ],
        "",
        None,
        False,
        (
            "GET\n"
            "/\n"
            "\n"
            "host:example.amazonaws.com\n"
            "my-header1:value1\n"
            'my-header2:"a b c"\n'
            "x-amz-date:20150830T123600Z\n"
            "\n"
            "host;my-header1;my-header2;x-amz-date\n"
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        ),
        (
            "AWS4-HMAC-SHA256\n"
            "20150830T123600Z\n"
            "20150830/us-east-1/service/aws4_request\n"
            "a726db9b0df21c14f559d0a978e563112acb1b9e05476f0a6a1c7d68f28605c7"
        ),
        "acc3ed3afb60bb290fc8d2dd0098b9911fcaa05412b367055dee359757a9c736",
    ),
    Vector(
        "get-header-key-duplicate",
        "GET",
        "/",
        [
            ("Host", "example.amazonaws.com"),
            ("My-Header1", "value2"),
            ("My-Header1", "value2"),
            ("My-Header1", "value1"),
        ],
        "",
        None,
        False,
        (
            "GET\n"
            "/\n"
            "\n"
            "host:example.amazonaws.com\n"
            "my-header1:value2,value2,value1\n"
            "x-amz-date:20150830T123600Z\n"
            "\n"
            "host;my-header1;x-amz-date\n"
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        ),
        (
            "AWS4-HMAC-SHA256\n"
            "20150830T123600Z\n"
            "20150830/us-east-1/service/aws4_request\n"
            "dc7f04a3abfde8d472b0ab1a418b741b7c67174dad1551b4117b15527fbe966c"
        ),
        "c9d5ea9f3f72853aea855b47ea873832890dbdd183b4468f858259531a5138ea",
    ),
    Vector(
        "post-vanilla",
        "POST",
        "/",
        [("Host", "example.amazonaws.com")],
        "",
        None,
        False,
        (
            "POST\n"
            "/\n"
            "\n"
            "host:example.amazonaws.com\n"
            "x-amz-date:20150830T123600Z\n"
            "\n"
            "host;x-amz-date\n"
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        ),
        (
            "AWS4-HMAC-SHA256\n"
            "20150830T123600Z\n"
            "20150830/us-east-1/service/aws4_request\n"
            "553f88c9e4d10fc9e109e2aeb65f030801b70c2f6468faca261d401ae622fc87"
        ),
        "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b",
    ),
    Vector(
        "post-vanilla-query",
        "POST",
        "/?Param1=value1",
        [("Host", "example.amazonaws.com")],
        "",
        None,
        False,
        (
            "POST\n"
            "/\n"
            "Param1=value1\n"
            "host:example.amazonaws.com\n"
            "x-amz-date:20150830T123600Z\n"
            "\n"
            "host;x-amz-date\n"
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        ),
        (
            "AWS4-HMAC-SHA256\n"
            "20150830T123600Z\n"
            "20150830/us-east-1/service/aws4_request\n"
            "9d659678c1756bb3113e2ce898845a0a79dbbc57b740555917687f1b3340fbbd"
        ),
        "28038455d6de14eafc1f9222cf5aa6f1a96197d7deb8263271d420d138af7f11",
    ),
    Vector(
        "post-header-key-case",
        "POST",
        "/",
        [("Host", "example.amazonaws.com")],
        "",
        None,
        False,
        (
            "POST\n"
            "/\n"
            "\n"
            "host:example.amazonaws.com\n"
            "x-amz-date:20150830T123600Z\n"
            "\n"
            "host;x-amz-date\n"
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        ),
        (
            "AWS4-HMAC-SHA256\n"
            "20150830T123600Z\n"
            "20150830/us-east-1/service/aws4_request\n"
            "553f88c9e4d10fc9e109e2aeb65f030801b70c2f6468faca261d401ae622fc87"
        ),
        "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b",
    ),
    Vector(
        "post-header-key-sort",
        "POST",
        "/",
        [("Host", "example.amazonaws.com"), ("My-Header1", "value1")],
        "",
        None,
        False,
        (
            "POST\n"
            "/\n"
            "\n"
            "host:example.amazonaws.com\n"
            "my-header1:value1\n"
            "x-amz-date:20150830T123600Z\n"
            "\n"
            "host;my-header1;x-amz-date\n"
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        ),
        (
            "AWS4-HMAC-SHA256\n"
            "20150830T123600Z\n"
            "20150830/us-east-1/service/aws4_request\n"
            "9368318c2967cf6de74404b30c65a91e8f6253e0a8659d6d5319f1a812f87d65"
        ),
        "c5410059b04c1ee005303aed430f6e6645f61f4dc9e1461ec8f8916fdf18852c",
    ),
    Vector(
        "post-header-value-case",
        "POST",
        "/",
        [("Host", "example.amazonaws.com"), ("My-Header1", "VALUE1")],
        "",
        None,
        False,
        (
            "POST\n"
            "/\n"
            "\n"
            "host:example.amazonaws.com\n"
            "my-header1:VALUE1\n"
            "x-amz-date:20150830T123600Z\n"
            "\n"
            "host;my-header1;x-amz-date\n"
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        ),
        (
            "AWS4-HMAC-SHA256\n"
            "20150830T123600Z\n"
            "20150830/us-east-1/service/aws4_request\n"
            "d51ced243e649e3de6ef63afbbdcbca03131a21a7103a1583706a64618606a93"
        ),
        "cdbc9802e29d2942e5e10b5bccfdd67c5f22c7c4e8ae67b53629efa58b974b7d",
    ),
    Vector(
        "post-x-www-form-urlencoded",
        "POST",
        "/",
        [
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Host", "example.amazonaws.com"),
            ("Content-Length", "13"),
        ],
        "Param1=value1",
        None,
        True,
        (
            "POST\n"
            "/\n"
            "\n"
            "content-length:13\n"
            "content-type:application/x-www-form-urlencoded\n"
            "host:example.amazonaws.com\n"
            "x-amz-content-sha256:9095672bbd1f56dfc5b65f3e153adc8731a4a65"
            "4192329106275f4c7b24d0b6e\n"
            "x-amz-date:20150830T123600Z\n"
            "\n"
            "content-length;content-type;host;x-amz-content-sha256;x-amz-date\n"
            "9095672bbd1f56dfc5b65f3e153adc8731a4a654192329106275f4c7b24d0b6e"
        ),
        (
            "AWS4-HMAC-SHA256\n"
            "20150830T123600Z\n"
            "20150830/us-east-1/service/aws4_request\n"
            "b1edd1d03544c25390e32085d55b57acc9a3961bb59415ff86c45c3d89d16cfb"
        ),
        "d3875051da38690788ef43de4db0d8f280229d82040bfac253562e56c3f20e0b",
    ),
    Vector(
        "get-vanilla-with-session-token",
        "GET",
        "/",
        [("Host", "example.amazonaws.com")],
        "",
        "6e86291e8372ff2a2260956d9b8aae1d763fbf315fa00fa31553b73ebf194267",
        False,
        (
            "GET\n"
            "/\n"
            "\n"
            "host:example.amazonaws.com\n"
            "x-amz-date:20150830T123600Z\n"
            "x-amz-security-token:6e86291e8372ff2a2260956d9b8aae1d763fbf3"
            "15fa00fa31553b73ebf194267\n"
            "\n"
            "host;x-amz-date;x-amz-security-token\n"
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        ),
        (
            "AWS4-HMAC-SHA256\n"
            "20150830T123600Z\n"
            "20150830/us-east-1/service/aws4_request\n"
            "067b36aa60031588cea4a4cde1f21215227a047690c72247f1d70b32fbbfad2b"
        ),
        "07ec1639c89043aa0e3e2de82b96708f198cceab042d4a97044c66dd9f74e7f8",
    ),
]


def signed_headers(vector: Vector) -> list[tuple[str, str]]:
    """The vector's headers plus those the signer adds before signing."""
    added = [("X-Amz-Date", DATE)]
    if vector.token:
        added.append(("X-Amz-Security-Token", vector.token))
    if vector.sign_body:
        added.append(("x-amz-content-sha256", hashlib.sha256(vector.body.encode()).hexdigest()))
    return [*vector.headers, *added]


@pytest.mark.parametrize("vector", VECTORS, ids=[v.name for v in VECTORS])
def test_the_published_vectors(vector):
    parts = urlsplit(vector.target)
    payload = hashlib.sha256(vector.body.encode()).hexdigest()
    headers = signed_headers(vector)
    request, signed = sigv4.canonical_request(
        vector.method, parts.path, parts.query, headers, payload
    )
    assert request == vector.canonical_request
    scope = sigv4.scope(DATE, "us-east-1", "service")
    to_sign = sigv4.string_to_sign(DATE, scope, request)
    assert to_sign == vector.string_to_sign
    assert sigv4.signature(
        CREDENTIALS.secret_access_key, DATE, "us-east-1", "service", to_sign
    ) == (vector.signature)
    credentials = sigv4.Credentials(CREDENTIALS.access_key_id, CREDENTIALS.secret_access_key)
    header = sigv4.authorization(
        credentials, vector.method, parts.path, parts.query, headers, payload,
        region="us-east-1", service="service", date=DATE,
    )  # fmt: skip
    assert header == (
        f"AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request,"
        f" SignedHeaders={signed}, Signature={vector.signature}"
    )


def test_sign_adds_the_date_the_token_and_the_authorization_of_the_suite():
    by_name = {v.name: v for v in VECTORS}
    plain = sigv4.sign(
        "POST", "https://example.amazonaws.com/", {"Host": "example.amazonaws.com"}, b"",
        CREDENTIALS, region="us-east-1", service="service", now=NOW,
    )  # fmt: skip
    assert plain["x-amz-date"] == DATE
    assert plain["authorization"].endswith(by_name["post-vanilla"].signature)
    with_token = sigv4.Credentials(
        "AKIDEXAMPLE",
        CREDENTIALS.secret_access_key,
        by_name["get-vanilla-with-session-token"].token,
    )
    temporary = sigv4.sign(
        "GET", "https://example.amazonaws.com/", {"host": "example.amazonaws.com"}, b"",
        with_token, region="us-east-1", service="service", now=NOW,
    )  # fmt: skip
    assert temporary["x-amz-security-token"] == with_token.session_token
    assert temporary["authorization"].endswith(by_name["get-vanilla-with-session-token"].signature)


def test_a_path_already_percent_encoded_is_encoded_again_as_non_s3_services_sign_it():
    assert sigv4.canonical_uri("/model/anthropic.claude-v2%3A1/converse") == (
        "/model/anthropic.claude-v2%253A1/converse"
    )


def test_the_secret_never_appears_in_what_is_sent():
    headers = sigv4.sign(
        "POST", "https://bedrock-runtime.us-east-1.amazonaws.com/model/m/converse",
        {"host": "bedrock-runtime.us-east-1.amazonaws.com", "content-type": "application/json"},
        b"{}", CREDENTIALS, region="us-east-1", service="bedrock", now=NOW,
    )  # fmt: skip
    assert CREDENTIALS.secret_access_key not in repr(headers)
    assert "SignedHeaders=content-type;host;x-amz-date," in headers["authorization"]
    assert repr(CREDENTIALS) == "Credentials(access_key_id='AKIDEXAMPLE')"
