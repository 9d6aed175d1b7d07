"""The Sweep and Compare pages through AppTest, on the tiny model."""

from __future__ import annotations

from sqlmodel import select

from studio.db.engine import session_for
from studio.db.tables import Job, JobStatus
from studio.jobs.worker import Worker
from tests.support import ADMIN_PASSWORD, image_captions, log_in, png_bytes, texts


def test_a_sweep_from_the_page_to_the_grid_and_a_comparison(studio, studio_settings):
    at = log_in("admin", ADMIN_PASSWORD)
    at.switch_page("pages/sweep.py").run()
    assert at.title[0].value == "Strength sweep"
    at.file_uploader(key="sweep.source_upload").set_value(("shoe.png", png_bytes(256, 320), "image/png")).run()
    at.text_area(key="sweep.prompt").input("a watercolor sneaker")
    at.slider(key="sweep.steps").set_value(4)
    at.segmented_control(key="sweep.mode").set_value("List")
    at.run()
    at.text_input(key="sweep.strength_list").input("0.25, 0.5, 1.0").run()
    assert not at.exception, at.exception
    assert any("3 cells · costs **3** credits" in c for c in texts(at.caption))
    at.button(key="sweep_button").click().run()
    assert not at.error, texts(at.error)
    with session_for(studio_settings.database_url) as session:
        jobs = session.exec(select(Job).order_by(Job.id)).all()
    assert [job.params["strength"] for job in jobs] == [0.25, 0.5, 1.0] and len({j.sweep_id for j in jobs}) == 1

    Worker(studio_settings, name="test-worker").run_once()
    at.run()
    assert not at.exception, at.exception
    with session_for(studio_settings.database_url) as session:
        assert [job.status for job in session.exec(select(Job)).all()] == [JobStatus.complete] * 3
    assert any("ran in one denoising pass" in c for c in texts(at.caption))
    assert {b.label for b in at.get("download_button")} >= {"Download grid", "Download ZIP (cells + manifest)"}
    assert len(at.get("plotly_chart")) == 1

    # "Use this one" opens Transform with that cell's settings.
    use = at.button(key=f"use-{jobs[1].id}")
    use.click().run()
    assert at.title[0].value == "Transform"
    assert at.slider(key="transform.strength").value == 0.5
    assert at.text_area(key="transform.prompt").value == "a watercolor sneaker"

    # The next sweep starts from the same source without asking for it again: it followed the user to Transform
    # and back, and the Library tab offers it (once, though three cells ran on it) beside the three results.
    at.switch_page("pages/sweep.py").run()
    assert not at.exception, at.exception
    assert "shoe.png · 256×320" in image_captions(at)
    assert texts(at.caption).count("shoe.png") == 1
    assert not at.button(key="sweep_button").disabled
    at.button(key=f"cell-{jobs[2].id}.open_in.Transform").click().run()  # a cell's result, sent on
    assert at.title[0].value == "Transform"
    assert f"img2img-{jobs[2].id}.png · 256×320" in image_captions(at)
    at.switch_page("pages/sweep.py").run()

    at.switch_page("pages/compare.py").run()
    assert not at.exception, at.exception
    assert len(at.image) >= 2  # the source and the result side by side
    at.segmented_control(key="compare.mode").set_value("Two results").run()
    at.segmented_control(key="compare.view").set_value("Difference").run()
    assert not at.exception, at.exception
    assert any("Mean difference" in c for c in texts(at.caption))
    assert at.dataframe  # the recipe settings that differ (strength)


def test_the_lora_weight_axis_appears_with_a_lora_and_runs_one_pass_per_weight(studio, studio_settings):
    at = log_in("admin", ADMIN_PASSWORD)
    at.switch_page("pages/sweep.py").run()
    at.file_uploader(key="sweep.source_upload").set_value(("shoe.png", png_bytes(256, 320), "image/png")).run()
    at.text_area(key="sweep.prompt").input("a watercolor sneaker")
    at.slider(key="sweep.steps").set_value(4)
    at.segmented_control(key="sweep.mode").set_value("List")
    at.run()
    at.text_input(key="sweep.strength_list").input("0.5, 1.0").run()
    assert "lora_weight" not in at.selectbox(key="sweep.axis").options  # no LoRA on the run yet
    at.multiselect(key="sweep.loras").set_value(["lcm-sd15"]).run()
    at.selectbox(key="sweep.axis").set_value("lora_weight").run()
    at.text_input(key="sweep.axis_values").input("0, 1.5").run()
    assert not at.exception, at.exception
    assert any("denoising pass of its own" in c for c in texts(at.caption))
    assert any("4 cells · costs **4** credits" in c for c in texts(at.caption))  # one run's price per cell

    # Taking the LoRA off the run takes its axis away (nothing left pointing at it).
    at.multiselect(key="sweep.loras").set_value([]).run()
    assert not at.exception, at.exception
    assert at.selectbox(key="sweep.axis").value == "none"
    at.multiselect(key="sweep.loras").set_value(["lcm-sd15"]).run()
    at.selectbox(key="sweep.axis").set_value("lora_weight").run()
    at.text_input(key="sweep.axis_values").input("0, 1.5").run()

    at.button(key="sweep_button").click().run()
    assert not at.error, texts(at.error)
    Worker(studio_settings, name="test-worker").run_once()
    at.run()
    assert not at.exception, at.exception
    with session_for(studio_settings.database_url) as session:
        jobs = session.exec(select(Job).order_by(Job.id)).all()
    assert [(job.status, job.recipe["loras"][0]["weight"]) for job in jobs] == [
        (JobStatus.complete, weight) for weight in (0.0, 0.0, 1.5, 1.5)
    ]
    assert any("ran one denoising pass per LoRA weight (2" in c for c in texts(at.caption))
    assert "**LoRA lcm-sd15 weight 1.5**" in [m.value for m in at.markdown]
