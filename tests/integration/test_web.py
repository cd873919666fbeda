"""The search page over the real gateway: its JSON API, safe thumbnails, security headers, and a
real headless Chromium that searches, opens "more like this" and shows a hostile label as text."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

import pytest
from PIL import Image
from starlette.testclient import TestClient

from core.settings import WebSettings
from devstack.stack import LocalStack, start_web
from export.samples import sample_photos
from t2i.client import GatewayClient
from tests.support.polling import wait_for
from tests.support.ports import unanswered_port
from tests.support.stack import PROJECT_ROOT
from text2image.v1 import text2image_pb2 as pb
from web.app import SECURITY_HEADERS, create_app

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver  # imported by the browser fixture only: selenium is a test extra

SUITE = "web-suite"
HOSTILE = "<script>window.pwned=1</script>"
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
ARTIFACTS = Path(os.environ.get("T2I_TEST_ARTIFACTS", PROJECT_ROOT / "data" / "test-artifacts"))


@pytest.fixture(scope="module")
def photo_root(stack: LocalStack, client: GatewayClient, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Indexed photos under an image root, plus ids whose files the page must refuse to show."""
    base = tmp_path_factory.mktemp("web")
    root, outside = base / "root", base / "outside"
    root.mkdir()
    outside.mkdir()
    photos = sample_photos(6)
    items = []
    for photo in photos[:5]:
        target = root / photo.name
        shutil.copyfile(photo, target)
        labels = [SUITE, HOSTILE] if photo.name == "chelsea.png" else [SUITE]
        items.append(pb.ImageItem(id=f"web/{photo.name}", content=target.read_bytes(), uri=str(target), labels=labels))
    secret = outside / "secret.png"
    shutil.copyfile(photos[5], secret)
    (root / "link.png").symlink_to(secret)  # inside the root, pointing out of it
    content = secret.read_bytes()
    items += [
        pb.ImageItem(id="web-refused/outside", content=content, uri=str(secret), labels=["web-refused"]),
        pb.ImageItem(id="web-refused/symlink", content=content, uri=str(root / "link.png"), labels=["web-refused"]),
        pb.ImageItem(id="web-refused/relative", content=content, uri="photos/secret.png", labels=["web-refused"]),
        pb.ImageItem(id="web-refused/url", content=content, uri="https://images.example.org/secret.png", labels=["web-refused"]),
    ]
    reply = client.index.UpsertImages(pb.UpsertImagesRequest(items=items), timeout=60)
    assert reply.failed == 0, reply
    return root


@pytest.fixture(scope="module")
def page(stack: LocalStack, photo_root: Path) -> Iterator[TestClient]:
    settings = WebSettings(gateway=stack.gateway_address, image_roots=str(photo_root))
    with TestClient(create_app(settings, token=stack.token("read"))) as http:
        yield http


def test_info_lists_model_labels_and_the_random_weights_flag(page: TestClient) -> None:
    info = page.get("/api/info").json()
    assert info["model_id"] == "random:tiny" and info["random_weights"] is True
    assert {SUITE, HOSTILE} <= set(info["labels"]) and info["labels_complete"] is True


def test_search_returns_hits_with_thumbnail_links(page: TestClient) -> None:
    answer = page.get("/api/search", params={"q": "a cat", "k": 3, "label": SUITE}).json()
    assert len(answer["hits"]) == 3 and answer["model_id"] == "random:tiny"
    for hit in answer["hits"]:
        assert hit["id"].startswith("web/") and SUITE in hit["labels"] and hit["thumb"] == "/thumb/" + quote(hit["id"], safe="")


def test_similar_and_search_by_image(page: TestClient, photo_root: Path) -> None:
    similar = page.get("/api/similar", params={"id": "web/chelsea.png", "k": 4, "label": SUITE}).json()
    assert "web/chelsea.png" not in [h["id"] for h in similar["hits"]] and len(similar["hits"]) == 4
    uploaded = page.post("/api/search-image", params={"k": 1, "label": SUITE}, content=(photo_root / "chelsea.png").read_bytes()).json()
    assert [h["id"] for h in uploaded["hits"]] == ["web/chelsea.png"]


@pytest.mark.parametrize(
    ("path", "status", "fragment"),
    [
        ("/api/search?q=cat&k=0", 400, "k must be between 1 and 100"),
        ("/api/search?q=cat&k=lots", 400, "k must be a whole number"),
        ("/api/search?q=cat&min_score=high", 400, "min_score must be a number"),
        ("/api/search?q=%20%20", 400, "query is empty"),
        ("/api/similar?id=not-indexed", 404, "no indexed image has id"),
    ],
)
def test_bad_requests_say_what_is_wrong(page: TestClient, path: str, status: int, fragment: str) -> None:
    response = page.get(path)
    assert response.status_code == status and fragment in response.json()["error"]


def test_bad_upload_is_refused_with_the_reason(page: TestClient) -> None:
    response = page.post("/api/search-image", content=b"not an image at all")
    assert response.status_code == 400 and "not a recognized image" in response.json()["error"]


def test_thumbnail_of_an_indexed_image(page: TestClient) -> None:
    response = page.get("/thumb/" + quote("web/chelsea.png", safe=""))
    assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
    assert max(Image.open(io.BytesIO(response.content)).size) == 256
    assert page.get("/thumb/web/chelsea.png").content == response.content  # the id may also be sent unescaped


@pytest.mark.parametrize(
    ("item_id", "status"),
    [
        ("../../../../etc/passwd", 404),  # ids are looked up, never joined to a path
        ("/etc/passwd", 404),
        ("web/../web/chelsea.png", 404),
        ("not-indexed.png", 404),
        ("web-refused/outside", 403),  # indexed, but its file is outside every image root
        ("web-refused/symlink", 403),  # a symlink inside the root that points out of it
        ("web-refused/relative", 404),
    ],
)
def test_thumbnails_only_for_indexed_files_under_the_roots(page: TestClient, item_id: str, status: int) -> None:
    response = page.get("/thumb/" + quote(item_id, safe=""))
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")  # an explanation, never the file


def test_thumbnail_of_a_url_redirects(page: TestClient) -> None:
    response = page.get("/thumb/" + quote("web-refused/url", safe=""), follow_redirects=False)
    assert response.status_code == 302 and response.headers["location"] == "https://images.example.org/secret.png"


def test_security_headers_on_every_response(page: TestClient) -> None:
    for path in ("/", "/static/app.js", "/api/info", "/thumb/none"):
        headers = page.get(path).headers
        for name, value in SECURITY_HEADERS.items():
            assert headers[name] == value, (path, name)
    assert "'unsafe-inline'" not in SECURITY_HEADERS["content-security-policy"]
    assert "<script>" not in page.get("/").text.replace('<script src="/static/app.js" defer></script>', "")  # no inline script


def test_gateway_down_is_a_clear_503() -> None:
    with unanswered_port() as port, TestClient(create_app(WebSettings(gateway=f"127.0.0.1:{port}", timeout_s=3))) as http:
        response = http.get("/api/search", params={"q": "cat"})
    assert response.status_code == 503 and "cannot be reached" in response.json()["error"]


# -- a real browser -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def web_server(stack: LocalStack, photo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The page as its own process, the way ``t2i up`` runs it."""
    process = start_web("127.0.0.1:0", stack.gateway_address, str(photo_root), tmp_path_factory.mktemp("weblog") / "web.log", stack.tokens.client_file("read"))
    try:
        yield f"http://{process.address}"
    finally:
        process.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    """Headless Debian Chromium through Selenium ('make install' installs both; a missing one fails, never skips)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    assert CHROMIUM.exists() and CHROMEDRIVER.exists(), "Chromium is missing: 'make browser' (run by 'make test') installs it"
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1280,900"):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=str(CHROMEDRIVER)))
    try:
        yield driver
    finally:
        driver.quit()


def loaded_images(driver: WebDriver) -> list[str]:
    """Ids of the grid's images that have loaded (natural width > 0)."""
    script = "return [...document.querySelectorAll('#grid img')].filter(i => i.complete && i.naturalWidth > 0).map(i => i.alt)"
    return driver.execute_script(script)


def test_the_page_in_a_real_browser(web_server: str, browser: WebDriver) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    driver = browser
    driver.get(f"{web_server}/?q=a+photo&k=5&label={SUITE}")
    wait_for(lambda: len(loaded_images(driver)) == 5, 20, "the page")
    assert all(item_id.startswith("web/") for item_id in loaded_images(driver))
    assert driver.find_element(By.ID, "random-warning").is_displayed()
    assert "random:tiny" in driver.find_element(By.ID, "model").text
    # The hostile label is shown as text, and never ran.
    tags = [tag.text for tag in driver.find_elements(By.CSS_SELECTOR, "#grid .tag")]
    assert HOSTILE in tags
    assert driver.execute_script("return window.pwned === undefined")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(ARTIFACTS / "web-search.png"))

    # "More like this" on the first hit.
    first = loaded_images(driver)[0]
    driver.find_element(By.CSS_SELECTOR, "#grid li button").click()
    wait_for(lambda: "similar=" in driver.current_url and loaded_images(driver) and first not in loaded_images(driver), 20, "the page")

    # Typing a query (keyboard only) puts it in the URL and fills the grid again.
    box = driver.find_element(By.ID, "q")
    box.clear()
    box.send_keys("red car", Keys.ENTER)
    wait_for(lambda: "q=red+car" in driver.current_url and len(loaded_images(driver)) > 0, 20, "the page")
    assert "images for “red car”" in driver.find_element(By.ID, "status").text


def test_the_page_on_a_phone_sized_screen(web_server: str, browser: WebDriver) -> None:
    driver = browser
    driver.set_window_size(390, 844)
    driver.get(f"{web_server}/?q=a+photo&k=4&label={SUITE}")
    wait_for(lambda: len(loaded_images(driver)) == 4, 20, "the page")
    width = driver.execute_script("return document.documentElement.scrollWidth")
    assert width <= 390  # no sideways scrolling
    driver.save_screenshot(str(ARTIFACTS / "web-phone.png"))
    driver.set_window_size(1280, 900)


def test_gateway_errors_show_as_a_message(web_server: str, browser: WebDriver) -> None:
    from selenium.webdriver.common.by import By

    driver = browser
    driver.get(f"{web_server}/?similar=not-indexed")
    wait_for(lambda: "no indexed image has id" in driver.find_element(By.ID, "status").text, 20, "the page")
    assert "error" in (driver.find_element(By.ID, "status").get_attribute("class") or "")


def test_subprocess_module_entry_point_has_help() -> None:
    result = subprocess.run([sys.executable, "-m", "web.server", "--help"], capture_output=True, text=True, check=True, cwd=PROJECT_ROOT)
    assert "--image-roots" in result.stdout and "T2I_WEB_IMAGE_ROOTS" in result.stdout
