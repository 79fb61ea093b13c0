"""`aidetect vertex ... --dry-run`: the printed YAML is a CustomJobSpec that google-cloud-aiplatform's own types
accept, whose container runs the local papermill command (one GPU) or torchrun across nodes (8 GPUs x 2 nodes).
Submission needs a Google Cloud project and credentials, so it is not tested here."""
import contextlib
import io
import json

import pytest
import yaml
from fastcore.script import anno_parser

from aidetect.vertex import expand_line, vertex

aiplatform = pytest.importorskip("google.cloud.aiplatform_v1.types", reason="the vertex extra is not installed")

IMAGE = "us-central1-docker.pkg.dev/my-project/aidetect/train:latest"


def dry_run(*argv: str) -> tuple[list[dict], str]:
    """Parse `argv` as the CLI does (`aidetect vertex ...`), run it with --dry-run, return (jobs, printed YAML)."""
    args = vars(anno_parser(vertex, prog="aidetect vertex").parse_args([*argv, "--dry-run"]))
    args.pop("pdb", None); args.pop("xtra", None)
    with contextlib.redirect_stdout(io.StringIO()) as out:
        jobs = vertex(**args)
    return jobs, out.getvalue()


def round_trip(spec: dict) -> dict:
    """`spec` through the client library's CustomJob and back to REST JSON (int64 fields come back as strings)."""
    job = aiplatform.CustomJob(display_name="t", job_spec=aiplatform.CustomJobSpec.from_json(json.dumps(spec)))
    return json.loads(aiplatform.CustomJobSpec.to_json(job.job_spec, use_integers_for_enums=False,
                                                  always_print_fields_with_no_presence=False))


def ints_as_str(x):
    if isinstance(x, dict): return {k: ints_as_str(v) for k, v in x.items()}
    if isinstance(x, list): return [ints_as_str(v) for v in x]
    return str(x) if isinstance(x, int) and not isinstance(x, bool) else x


def test_single_t4_runs_the_local_papermill_command():
    jobs, printed = dry_run("train", "-f", "params/kaggle-gpu.yaml", "-p", "lr", "1e-4", "--bucket", "gs://my-bucket",
                            "--image", IMAGE, "--project", "my-project", "--region", "europe-west4")
    spec = yaml.safe_load(printed)
    assert spec == jobs[0]["spec"]
    assert ints_as_str(round_trip(spec)) == ints_as_str(spec)  # a misspelt field or enum would not survive
    assert "gcloud ai custom-jobs create --project=my-project --region=europe-west4" in printed
    (pool,) = spec["workerPoolSpecs"]
    assert pool["machineSpec"] == {"machineType": "n1-standard-8", "acceleratorType": "NVIDIA_TESLA_T4",
                                   "acceleratorCount": 1}
    assert pool["replicaCount"] == 1 and pool["containerSpec"]["imageUri"] == IMAGE
    sh, c, line = pool["containerSpec"]["command"]
    mkdir, run = expand_line(line)
    out = "/gcs/my-bucket/outputs/kaggle-efficientnet_b0"
    assert (sh, c, mkdir) == ("sh", "-c", ["mkdir", "-p", out])
    assert run == ["papermill", "nbs/train.ipynb", f"{out}/train.ipynb", "-f", "params/kaggle-gpu.yaml",
                   "-p", "lr", "1e-4", "-p", "data", "/gcs/my-bucket/data/kaggle", "-p", "out_dir", out,
                   "-p", "pretrained", "/gcs/my-bucket/weights/efficientnet_b0.safetensors"]


def test_eight_gpus_on_two_nodes_run_torchrun_with_vertex_environment():
    jobs, printed = dry_run("train", "-f", "params/kaggle-gpu.yaml", "-p", "batch_size", "2048",
                            "--bucket", "gs://my-bucket", "--image", IMAGE, "--machine", "a3-highgpu-8g",
                            "--accelerator", "NVIDIA_H100_80GB", "--gpus-per-node", "8", "--nodes", "2")
    spec = yaml.safe_load(printed)
    assert ints_as_str(round_trip(spec)) == ints_as_str(spec)
    primary, workers = spec["workerPoolSpecs"]
    assert (primary["replicaCount"], workers["replicaCount"]) == (1, 1)
    assert primary["machineSpec"] == workers["machineSpec"] == {
        "machineType": "a3-highgpu-8g", "acceleratorType": "NVIDIA_H100_80GB", "acceleratorCount": 8}
    assert primary["containerSpec"] == workers["containerSpec"]
    line = primary["containerSpec"]["command"][2]
    for rank in ("0", "1"):  # each node gets its own rank from Vertex AI's environment
        _, run = expand_line(line, {"RANK": rank, "MASTER_ADDR": "10.0.0.2", "MASTER_PORT": "29500"})
        assert run == ["torchrun", "--nnodes=2", "--nproc-per-node=8", f"--node-rank={rank}",
                       "--master-addr=10.0.0.2", "--master-port=29500", "--no-python", "aidetect", "train", "-q",
                       "-f", "params/kaggle-gpu.yaml", "-p", "batch_size", "2048",
                       "-p", "data", "/gcs/my-bucket/data/kaggle",
                       "-p", "out_dir", "/gcs/my-bucket/outputs/kaggle-efficientnet_b0",
                       "-p", "pretrained", "/gcs/my-bucket/weights/efficientnet_b0.safetensors"]
    with pytest.raises(ValueError, match="RANK"):
        expand_line(line, {"MASTER_ADDR": "10.0.0.2", "MASTER_PORT": "29500"})
    one_node = dry_run("train", "--bucket", "gs://my-bucket", "--image", IMAGE, "--gpus-per-node", "4")[0][0]
    assert one_node["command"][:4] == ["torchrun", "--standalone", "--nproc-per-node=4", "--no-python"]


def test_evaluate_and_sweep():
    (job,), printed = dry_run("evaluate", "-p", "checkpoint", "outputs/kaggle", "-p", "data", "data/kaggle",
                              "--bucket", "gs://my-bucket", "--image", IMAGE)
    assert ints_as_str(round_trip(yaml.safe_load(printed))) == ints_as_str(job["spec"])
    run, data = "/gcs/my-bucket/outputs/kaggle", "/gcs/my-bucket/data/kaggle"
    assert job["command"] == ["papermill", "nbs/evaluate.ipynb", f"{run}/evaluate.ipynb",
                              "-p", "checkpoint", run, "-p", "data", data]
    jobs, printed = dry_run("sweep", "-f", "params/demo.yaml", "-p", "lr", "1e-3,3e-3", "-p", "batch_size", "32,64",
                            "--bucket", "gs://my-bucket", "--image", IMAGE, "--accelerator", "")
    specs = list(yaml.safe_load_all(printed))
    assert len(specs) == len(jobs) == 4
    for spec in specs: assert ints_as_str(round_trip(spec)) == ints_as_str(spec)
    assert [j["folder"] for j in jobs] == [f"/gcs/my-bucket/outputs/demo/batch_size={bs}_lr={lr}"  # as aidetect sweep
                                           for bs in ("32", "64") for lr in ("0.001", "0.003")]
    tail = ["-p", "lr", "0.003", "-p", "batch_size", "64", "-p", "out_dir", jobs[3]["folder"]]
    assert jobs[3]["command"][-9:] == tail
    assert "acceleratorType" not in specs[0]["workerPoolSpecs"][0]["machineSpec"]


def test_bad_input_is_refused_early():
    for argv, message in [(("train", "-p", "lr_max", "1", "--bucket", "gs://my-bucket", "--image", IMAGE), "lr_max"),
                          (("train", "--bucket", "my-bucket", "--image", IMAGE), "gs://NAME"),
                          (("train", "--bucket", "gs://my-bucket"), "image"),
                          (("train", "-f", "nope.yaml", "--bucket", "gs://my-bucket", "--image", IMAGE), "nope.yaml"),
                          (("evaluate", "--bucket", "gs://my-bucket", "--image", IMAGE, "--nodes", "2"), "one GPU")]:
        with pytest.raises((ValueError, OSError), match=message):
            dry_run(*argv)
