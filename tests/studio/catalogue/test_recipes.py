import io

from PIL import Image

from studio.catalogue.recipes import png_with_recipe, read_recipe


def test_recipe_round_trips_through_png():
    recipe = {"prompt": "a red shoe, «watercolor»", "seed": 42, "strength": 0.55, "versions": {"torch": "2"}}
    png = png_with_recipe(Image.new("RGB", (16, 8), "red"), recipe)
    assert read_recipe(png) == recipe
    with Image.open(io.BytesIO(png)) as image:
        assert image.size == (16, 8)


def test_files_without_a_recipe_have_none():
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buffer, format="PNG")
    assert read_recipe(buffer.getvalue()) is None
    assert read_recipe(b"not an image") is None
