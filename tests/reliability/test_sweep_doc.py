"""scripts/sweep rewrites only its own part of docs/reliability.md; sections others wrote stay."""
from tests.reliability.run_sweep import BEGIN, END, write_doc


def test_sweep_part_replaced_other_sections_kept(tmp_path):
    doc = tmp_path / "reliability.md"
    doc.write_text("# Reliability: the crash-point sweep\n\nold table\n\n## Hypothesis fault campaigns\ncampaigns\n"
                   "\n## Bad input\nbad input table\n")
    write_doc(doc, f"{BEGIN}\n# Reliability: the crash-point sweep\nnew table 1\n{END}\n")
    text = doc.read_text()
    assert "old table" not in text and "new table 1" in text
    assert text.index(END) < text.index("## Hypothesis fault campaigns") < text.index("## Bad input")
    assert "campaigns\n" in text and "bad input table\n" in text
    doc.write_text(doc.read_text() + "\n## Appended later\nmore\n")
    write_doc(doc, f"{BEGIN}\nnew table 2\n{END}\n")
    text = doc.read_text()
    assert "new table 1" not in text and "new table 2" in text and text.count(BEGIN) == 1
    for kept in ("## Hypothesis fault campaigns", "bad input table", "## Appended later\nmore"):
        assert kept in text


def test_chosen_spaces_section_appended_last_then_replaced_in_place(tmp_path):
    from tests.reliability.run_sweep import CHOSEN_BEGIN, CHOSEN_END, write_chosen_doc

    doc = tmp_path / "reliability.md"
    doc.write_text(f"{BEGIN}\nsweep\n{END}\n\n## Bad input\nbad input table\n")
    write_chosen_doc(doc, f"{CHOSEN_BEGIN}\nchosen 1\n{CHOSEN_END}\n")
    text = doc.read_text()
    assert text.index("bad input table") < text.index(CHOSEN_BEGIN) < text.index("chosen 1") < text.index(CHOSEN_END)
    doc.write_text(text + "\n## Appended later\nmore\n")
    write_chosen_doc(doc, f"{CHOSEN_BEGIN}\nchosen 2\n{CHOSEN_END}\n")
    text = doc.read_text()
    assert "chosen 1" not in text and "chosen 2" in text and text.count(CHOSEN_BEGIN) == 1
    assert text.index("chosen 2") < text.index("## Appended later\nmore")
    write_doc(doc, f"{BEGIN}\nsweep 2\n{END}\n")  # the main sweep keeps the family's section
    assert "chosen 2" in doc.read_text() and "sweep 2" in doc.read_text()
