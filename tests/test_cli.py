import json

from fedmedlib import cli


def test_partition_json_prints_the_clients_by_classes_matrix(real_data_root, capsys):
    code = cli.main(["partition", "--clients", "10", "--scheme", "dirichlet", "--alpha", "0.3", "--json",
                     "--data", str(real_data_root)])
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    assert len(out["counts"]) == 10 and all(len(row) == 8 for row in out["counts"])
    assert sum(map(sum, out["counts"])) == 11959 == sum(out["sizes"])


def test_train_json_reports_accuracy_and_provenance(real_data_root, capsys):
    code = cli.main(["train", "--model", "dpresnet", "--width", "8", "--epochs", "1", "--subset", "200",
                     "--eval-subset", "100", "--json", "--data", str(real_data_root)])
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    assert 0 <= out["test_accuracy_at_best_val"] <= 1 and out["n_train"] == 200
    assert out["provenance"]["git_commit"]


def test_bad_input_exits_2_with_a_message(real_data_root, capsys):
    code = cli.main(["partition", "--clients", "5", "--scheme", "dirichlet", "--alpha", "-1",
                     "--data", str(real_data_root)])
    assert code == 2 and "alpha must be > 0" in capsys.readouterr().err


def test_data_command_verifies_the_file(real_data_root, capsys):
    assert cli.main(["data", "--data", str(real_data_root), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["verified"] is True


def test_run_json_reports_rounds_and_writes_the_out_file(real_data_root, tmp_path, capsys):
    out_file = tmp_path / "run.json"
    code = cli.main(["run", "--clients", "3", "--scheme", "iid", "--rounds", "2", "--width", "8", "--subset", "150",
                     "--eval-subset", "60", "--json", "--out", str(out_file), "--data", str(real_data_root)])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and [h["round"] for h in out["rounds"]] == [1, 2]
    assert out["config"]["n_clients"] == 3 and out["profile"] == "quick"
    assert json.loads(out_file.read_text())["rounds"] == out["rounds"]


def test_run_with_secagg_aggregates_securely(real_data_root, capsys):
    code = cli.main(["run", "--clients", "4", "--scheme", "iid", "--rounds", "1", "--width", "8", "--subset", "120",
                     "--eval-subset", "40", "--secagg", "--threshold", "3", "--json", "--data", str(real_data_root)])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["rounds"][0]["aggregator"] == "secagg" and out["rounds"][0]["aggregated"] == 4


def test_run_with_record_level_dp_reports_the_epsilon_spent(real_data_root, capsys):
    code = cli.main(["run", "--clients", "3", "--scheme", "iid", "--rounds", "1", "--width", "8", "--subset", "150",
                     "--eval-subset", "60", "--dp", "dpsgd", "--epsilon", "6", "--json", "--data", str(real_data_root)])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and abs(out["rounds"][0]["epsilon"] - 6.0) < 0.12 and out["config"]["dp"] == "dpsgd"
