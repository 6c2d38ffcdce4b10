"""``POST /v1/upscale`` through the ASGI app: every method x scale x mode x format, headers,
multipart, and each error of the contract from a real bad input."""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from service.imaging.colour import rgb_to_ycbcr
from service.imaging.resamplers import interpolate

from .helpers import assert_problem, decode, image_bytes, pattern, post

METHODS = ["nearest", "bilinear", "bicubic", "espcn", "deconv"]
MODES = ["RGB", "RGBA", "L", "P"]
FORMATS = ["png", "jpeg", "webp"]
EXPECTED_MODE = {
    # (input mode, output format) -> mode of the returned image
    **{(m, "png"): {"RGB": "RGB", "RGBA": "RGBA", "L": "L", "P": "RGB"}[m] for m in MODES},
    **{(m, "jpeg"): {"RGB": "RGB", "RGBA": "RGB", "L": "L", "P": "RGB"}[m] for m in MODES},
    **{(m, "webp"): {"RGB": "RGB", "RGBA": "RGBA", "L": "RGB", "P": "RGB"}[m] for m in MODES},
}


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("method", METHODS)
def test_every_method_scale_mode_and_format(
    client: TestClient, method: str, scale: int, mode: str, fmt: str
) -> None:
    data = image_bytes(mode, (19, 13))
    response = post(client, data, scale=scale, method=method, format=fmt)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == f"image/{fmt}"
    assert response.headers["x-sr-method"] == method
    assert response.headers["x-sr-scale"] == str(scale)
    out = decode(response.content)
    assert out.size == (19 * scale, 13 * scale)
    assert out.format == fmt.upper()
    assert out.mode == EXPECTED_MODE[(mode, fmt)]


@pytest.mark.parametrize("method", ["nearest", "bilinear", "bicubic"])
@pytest.mark.parametrize("align_corners", [False, True])
def test_classical_output_is_torch_interpolate(
    client: TestClient, method: str, align_corners: bool
) -> None:
    pixels = pattern(11, 9)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    response = post(client, buffer.getvalue(), scale=3, method=method, align_corners=str(align_corners).lower())
    assert response.status_code == 200
    planes = torch.from_numpy(pixels.copy()).permute(2, 0, 1)[None].float()
    expected = interpolate(planes, 3, method, align_corners=align_corners if method != "nearest" else False)
    expected_u8 = expected.round().clamp(0, 255).to(torch.uint8)[0].permute(1, 2, 0).numpy()
    assert np.array_equal(np.asarray(decode(response.content)), expected_u8)


def test_align_corners_changes_bilinear(client: TestClient) -> None:
    data = image_bytes("RGB", (8, 8))
    a = post(client, data, scale=2, method="bilinear", align_corners="false").content
    b = post(client, data, scale=2, method="bilinear", align_corners="true").content
    assert np.asarray(decode(a)).tolist() != np.asarray(decode(b)).tolist()


def test_learned_methods_change_only_luminance_detail(client: TestClient) -> None:
    """Cb/Cr come from bicubic; Y from the network: chroma of espcn ~= chroma of bicubic."""
    data = image_bytes("RGB", (32, 24))
    espcn = np.asarray(decode(post(client, data, scale=2, method="espcn").content)).astype(np.float64)
    bicubic = np.asarray(decode(post(client, data, scale=2, method="bicubic").content)).astype(np.float64)
    to_ycc = lambda a: rgb_to_ycbcr(torch.from_numpy(a).permute(2, 0, 1))  # noqa: E731
    e, b = to_ycc(espcn), to_ycc(bicubic)
    assert (e[1:] - b[1:]).abs().mean() < 1.0  # chroma: same resampler, rounding apart
    assert (e[0] - b[0]).abs().mean() > 0.5  # luminance: the network did something else


@pytest.mark.parametrize("method", ["espcn", "espcn-large"])
def test_a_grey_image_upscales_as_its_grey_rgb_twin(client: TestClient, method: str) -> None:
    # Grey g is the RGB pixel (g, g, g): the network must see the same luminance for both
    # (the studio swing it learnt), not the grey values' full 0..255 swing.
    grey = Image.open(io.BytesIO(image_bytes("L", (30, 22))))
    stretched = grey.point(lambda g: 0 if g < 128 else 255)  # extremes: where the swings differ
    twins = {}
    for mode in ("L", "RGB"):
        buffer = io.BytesIO()
        stretched.convert(mode).save(buffer, format="PNG")
        out = decode(post(client, buffer.getvalue(), scale=2, method=method).content)
        twins[mode] = np.asarray(out.convert("L") if mode == "RGB" else out).astype(int)
    assert np.abs(twins["L"] - twins["RGB"]).max() <= 1


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_deconv_matches_espcn_on_shipped_weights(client: TestClient, scale: int) -> None:
    data = image_bytes("RGB", (40, 31))
    a = np.asarray(decode(post(client, data, scale=scale, method="espcn").content)).astype(int)
    b = np.asarray(decode(post(client, data, scale=scale, method="deconv").content)).astype(int)
    # Float rounding of two equal sums may flip a pixel by one grey level, never more.
    assert np.abs(a - b).max() <= 1
    assert (a != b).mean() < 0.01


def test_headers_model_request_id_and_server_timing(client: TestClient) -> None:
    response = client.post(
        "/v1/upscale?scale=3&method=espcn",
        content=image_bytes(),
        headers={"Content-Type": "image/png", "X-Request-ID": "abc-123"},
    )
    assert response.status_code == 200
    assert response.headers["x-request-id"] == "abc-123"
    assert response.headers["x-sr-model"].startswith("espcn-x3@")
    timing = dict(part.strip().split(";dur=") for part in response.headers["server-timing"].split(","))
    stages = {name: float(ms) for name, ms in timing.items()}
    assert list(stages) == ["read", "decode", "queue", "infer", "post", "split", "merge", "encode", "total"]
    # The colour work is inside post, and every stage inside the total.
    assert stages["split"] + stages["merge"] <= stages["post"] + 0.01
    assert sum(v for k, v in stages.items() if k not in ("split", "merge", "total")) <= stages["total"] + 0.01


def test_request_id_is_generated_when_absent(client: TestClient) -> None:
    a = post(client, image_bytes(), method="bicubic").headers["x-request-id"]
    b = post(client, image_bytes(), method="bicubic").headers["x-request-id"]
    assert a and b and a != b


def test_classical_methods_have_no_model_header(client: TestClient) -> None:
    assert "x-sr-model" not in post(client, image_bytes(), method="nearest").headers


def test_defaults_are_espcn_x2_and_png(client: TestClient) -> None:
    response = client.post("/v1/upscale", content=image_bytes(), headers={"Content-Type": "image/png"})
    assert response.headers["x-sr-method"] == "espcn"
    assert response.headers["x-sr-scale"] == "2"
    assert response.headers["content-type"] == "image/png"


def test_multipart_field_image(client: TestClient) -> None:
    response = client.post(
        "/v1/upscale?scale=2&method=bicubic",
        files={"image": ("photo.png", image_bytes(), "image/png")},
    )
    assert response.status_code == 200
    assert decode(response.content).size == (46, 34)


def test_curl_default_content_type_is_accepted(client: TestClient) -> None:
    # `curl --data-binary @photo.png URL` sends application/x-www-form-urlencoded.
    response = post(client, image_bytes(), "application/x-www-form-urlencoded", scale=2)
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("accept", "fmt_in", "expected"),
    [
        ("image/webp", "PNG", "webp"),
        ("image/jpeg, */*;q=0.1", "PNG", "jpeg"),
        ("*/*", "JPEG", "jpeg"),
        ("*/*", "WEBP", "webp"),
        # Equal q: the input's format when it is acceptable, else the first named.
        ("image/png, image/webp", "JPEG", "png"),
        ("image/png, image/jpeg", "JPEG", "jpeg"),
        ("image/webp,image/png;q=0.5", "PNG", "webp"),  # q-values count
        ("image/png;q=0.4, image/webp;q=0.9", "PNG", "webp"),
        ("text/html", "WEBP", "webp"),  # nothing acceptable: the input's
        ("", "PNG", "png"),
    ],
)
def test_output_format_negotiation(client: TestClient, accept: str, fmt_in: str, expected: str) -> None:
    response = client.post(
        "/v1/upscale?method=bicubic",
        content=image_bytes(fmt=fmt_in),
        headers={"Content-Type": "application/octet-stream", "Accept": accept},
    )
    assert response.headers["content-type"] == f"image/{expected}"


def test_format_parameter_beats_accept(client: TestClient) -> None:
    response = client.post(
        "/v1/upscale?method=bicubic&format=png",
        content=image_bytes(),
        headers={"Content-Type": "image/png", "Accept": "image/webp"},
    )
    assert response.headers["content-type"] == "image/png"


def test_jpeg_quality_changes_the_size(client: TestClient) -> None:
    data = image_bytes(size=(64, 64))
    small = post(client, data, method="bicubic", format="jpeg", quality=5).content
    large = post(client, data, method="bicubic", format="jpeg", quality=95).content
    assert len(small) < len(large)


def test_exif_orientation_is_applied(client: TestClient) -> None:
    img = Image.fromarray(pattern(30, 10))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    buffer = io.BytesIO()
    img.save(buffer, format="JPEG", exif=exif)
    response = post(client, buffer.getvalue(), "image/jpeg", scale=2, method="nearest")
    assert decode(response.content).size == (20, 60)


def test_icc_profile_is_kept(client: TestClient) -> None:
    from PIL import ImageCms

    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    data = image_bytes(icc_profile=profile)
    for method in ("bicubic", "espcn"):
        out = decode(post(client, data, method=method).content)
        assert out.info.get("icc_profile") == profile


def test_transparency_survives(client: TestClient) -> None:
    rgba = pattern(12, 10, 4)
    rgba[:, :6, 3] = 0
    rgba[:, 6:, 3] = 255
    buffer = io.BytesIO()
    Image.fromarray(rgba).save(buffer, format="PNG")
    out = np.asarray(decode(post(client, buffer.getvalue(), scale=2, method="espcn").content))
    assert out[:, :10, 3].max() <= 5 and out[:, 14:, 3].min() >= 250


# --- errors: status, code and problem+json for real bad inputs --------------------------------


def test_empty_body(client: TestClient) -> None:
    assert_problem(post(client, b""), 400, "invalid_image")


def test_truncated_png(client: TestClient) -> None:
    data = image_bytes(size=(64, 64))
    assert_problem(post(client, data[: len(data) // 2]), 400, "invalid_image")


def test_text_file_sent_as_an_image(client: TestClient) -> None:
    assert_problem(post(client, b"just some text\n" * 10), 400, "invalid_image")


def test_text_content_type(client: TestClient) -> None:
    assert_problem(post(client, b"hello", "text/plain"), 415, "unsupported_media_type")


def test_other_image_formats_are_unsupported_media_types(client: TestClient) -> None:
    # GIF comes in (tests/test_animation.py); BMP and TIFF do not.
    for fmt in ("BMP", "TIFF"):
        assert_problem(post(client, image_bytes("RGB", fmt=fmt), "image/x-" + fmt.lower()), 415,
                       "unsupported_media_type")


def test_unknown_method(client: TestClient) -> None:
    response = post(client, image_bytes(), method="lanczos")
    assert_problem(response, 422, "invalid_parameter")
    assert "lanczos" in response.json()["detail"]


def test_unpooling_is_not_a_method(client: TestClient) -> None:
    assert_problem(post(client, image_bytes(), method="unpool"), 422, "invalid_parameter")


def test_scale_5(client: TestClient) -> None:
    response = post(client, image_bytes(), scale=5)
    assert_problem(response, 422, "invalid_parameter")
    assert "got 5" in response.json()["detail"]


def test_scale_not_a_number(client: TestClient) -> None:
    assert_problem(post(client, image_bytes(), scale="two"), 422, "invalid_parameter")


@pytest.mark.parametrize("quality", [0, 101, -3])
def test_quality_out_of_range(client: TestClient, quality: int) -> None:
    assert_problem(post(client, image_bytes(), format="jpeg", quality=quality), 422, "invalid_parameter")


def test_bad_format(client: TestClient) -> None:
    assert_problem(post(client, image_bytes(), format="bmp"), 422, "invalid_parameter")


def test_multipart_without_image_field(client: TestClient) -> None:
    response = client.post("/v1/upscale", files={"file": ("a.png", image_bytes(), "image/png")})
    assert_problem(response, 422, "invalid_parameter")


def test_oversize_upload(make_client: Callable[..., TestClient]) -> None:
    client = make_client(max_upload_bytes=1000)
    data = image_bytes(size=(64, 64))
    assert len(data) > 1000
    assert_problem(post(client, data), 413, "payload_too_large")


def test_oversize_upload_without_content_length(make_client: Callable[..., TestClient]) -> None:
    client = make_client(max_upload_bytes=1000)

    def chunks():  # type: ignore[no-untyped-def]
        for _ in range(10):
            yield b"\0" * 500

    response = client.post("/v1/upscale", content=chunks(), headers={"Content-Type": "image/png"})
    assert_problem(response, 413, "payload_too_large")


def test_too_many_input_pixels(make_client: Callable[..., TestClient]) -> None:
    client = make_client(max_input_pixels=100)
    assert_problem(post(client, image_bytes(size=(11, 10))), 413, "image_too_large")


def test_too_many_output_pixels(make_client: Callable[..., TestClient]) -> None:
    client = make_client(max_output_pixels=1000)
    response = post(client, image_bytes(size=(10, 10)), scale=4)
    assert_problem(response, 413, "image_too_large")
    assert post(client, image_bytes(size=(10, 10)), scale=3).status_code == 200


def test_decompression_bomb_is_refused_from_the_header(client: TestClient) -> None:
    # A 20000x20000 greyscale PNG of zeros compresses to a few hundred kilobytes.
    img = Image.new("L", (20000, 20000))
    buffer = io.BytesIO()
    img.save(buffer, format="PNG", compress_level=9)
    assert_problem(post(client, buffer.getvalue()), 413, "image_too_large")


def test_unknown_route_and_wrong_verb_are_problems(client: TestClient) -> None:
    assert_problem(client.get("/v1/nothing"), 404, "not_found")
    assert_problem(client.get("/v1/upscale"), 405, "method_not_allowed")


def test_server_keeps_serving_after_bad_requests(client: TestClient) -> None:
    for bad in (b"", b"garbage", image_bytes()[:40]):
        assert post(client, bad).status_code == 400
    assert post(client, image_bytes()).status_code == 200


def test_api_keys(make_client: Callable[..., TestClient]) -> None:
    client = make_client(api_keys="k1, k2")
    assert_problem(post(client, image_bytes()), 401, "unauthorized")
    bad = client.post("/v1/upscale", content=image_bytes(), headers={"Authorization": "Bearer nope"})
    assert_problem(bad, 401, "unauthorized")
    ok = client.post(
        "/v1/upscale", content=image_bytes(), headers={"Authorization": "Bearer k2", "Content-Type": "image/png"}
    )
    assert ok.status_code == 200
    assert client.get("/livez").status_code == 200  # probes need no key
