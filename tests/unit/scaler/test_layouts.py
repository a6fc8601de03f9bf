"""Which file belongs to which experiment number, in the flat layout and mixes:
the grouping decisions the corpus tests rely on, one at a time."""

from __future__ import annotations

from actors.scaler.layouts import collect, read_text


def tree(root, files: dict[str, str | bytes]):
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        (path.write_bytes if isinstance(content, bytes) else path.write_text)(content)
    (root / "experiments").mkdir(exist_ok=True)
    return collect(root / "experiments", root / "code", root / "proposals")


def test_one_number_many_spellings_and_years_are_not_numbers(tmp_path):
    col = tree(tmp_path, {
        "experiments/063_results.md": "Verdict: PROCEED\n",
        "experiments/063_notes.md": "more notes\n",  # notes of 063, not a second experiment
        "code/0063/train.py": "",  # "0063" and "063" are one number
        "code/2024_archive/old.py": "",  # a year, not experiment 2024
        "experiments/update-log-2024-06-07.md": "- 063 PROCEED\n- 2024 was a good year\n",
    })
    assert list(col.bundles) == ["063"]
    b = col.bundles["063"]
    assert [p.name for p in b.code_dirs] == ["0063"] and not b.shared_by()
    assert [p.name for p in b.documents] == ["063_notes.md"]
    assert [line for _, line in b.mentions] == ["- 063 PROCEED"]


def test_a_later_version_of_the_results_supersedes_the_first(tmp_path):
    col = tree(tmp_path, {"experiments/110_results.md": "Verdict: PROCEED\n",
                          "experiments/110_results_v2.md": "Verdict: ABANDON\n"})
    b = col.bundles["110"]
    assert [p.name for p in b.results + b.documents] == ["110_results_v2.md"] and not b.shared_by()
    assert [p.name for p in b.logs] == ["110_results.md"]  # the old version informs only


def test_a_shared_log_is_cut_into_sections_and_update_logs_into_mentions(tmp_path):
    col = tree(tmp_path, {
        "experiments/experiment-log.md": "# Log\n\n## 027 — shift\n- on Modal\n\n## 2024-06-13\n- maintenance\n\n"
                                         "### Exp 51: depths\n- running\n",
        "experiments/weekly-update-2024-06-14.md": "## In flight\n- 027, 051 on Modal\n- see #123 for the bug\n",
    })
    assert sorted(col.bundles) == ["027", "051", "123"]
    assert col.bundles["027"].log_sections[0][1].startswith("## 027 — shift\n- on Modal")
    assert "maintenance" not in col.bundles["027"].log_sections[0][1]  # a dated heading closes the section
    assert [line for _, line in col.bundles["051"].mentions] == ["- 027, 051 on Modal"]


def test_two_experiments_under_one_number_are_reported(tmp_path):
    col = tree(tmp_path, {"code/063/train.py": "", "code/063_dyt/train.py": "",
                          "experiments/experiment-log-063.md": "- LN\n",
                          "experiments/experiment-log-063-dyt.md": "- DyT\n"})
    assert col.bundles["063"].shared_by() == [
        "2 code folders (063, 063_dyt)", "2 logs (experiment-log-063-dyt.md, experiment-log-063.md)"]


def test_the_proposal_named_in_the_readme_wins_over_the_number(tmp_path):
    col = tree(tmp_path, {"code/070/README.md": "Implements [the plan](../../proposals/041-dyt.md).\n",
                          "proposals/041-dyt.md": "# DyT\n", "proposals/070-other.md": "# other\n",
                          "code/071/README.md": "no reference\n", "proposals/071-by-number.md": "# 71\n"})
    assert col.bundles["070"].proposal.name == "041-dyt.md"
    assert col.bundles["071"].proposal.name == "071-by-number.md"


def test_notes_from_another_machine_are_read_and_binary_files_are_refused(tmp_path):
    latin = tmp_path / "a.md"
    latin.write_bytes("Résumé: “free lunch”. Verdict: PROCEED".encode("cp1252"))
    assert read_text(latin) == ("Résumé: “free lunch”. Verdict: PROCEED", None)
    png = tmp_path / "b.md"
    png.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    assert read_text(png) == (None, "b.md looks binary (contains NUL bytes), not a text document")
