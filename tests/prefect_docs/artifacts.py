"""docs/v3/how-to-guides/workflows/artifacts.mdx."""

from prefect import flow, task


def ex_artifacts_link():
    """'Create link artifacts': from tasks (same key twice) and from a flow, with link_text."""
    from prefect.artifacts import create_link_artifact

    @task
    def first():
        return create_link_artifact(key="irregular-data", link="https://example.com/a.csv", description="## A")

    @task
    def second():
        return create_link_artifact(key="irregular-data", link="https://example.com/b.csv", description="# B")

    @flow
    def my_flow():
        return first(), second(), create_link_artifact(key="my-link", link="https://example.com/", link_text="Example")

    ids = my_flow()
    assert all(i is not None for i in ids) and len(set(map(str, ids))) == 3


def ex_artifacts_markdown():
    """'Create Markdown artifacts': a markdown report from a task."""
    from prefect.artifacts import create_markdown_artifact

    @task
    def report():
        return create_markdown_artifact(key="sales-report", markdown="# Sales\n\n| a | b |\n|---|---|\n| 1 | 2 |",
                                        description="Quarterly")

    @flow
    def f():
        return report()

    assert f() is not None


def ex_artifacts_table():
    """'Create table artifacts': a list of dicts as a table."""
    from prefect.artifacts import create_table_artifact

    @flow
    def f():
        return create_table_artifact(key="risks", table=[{"customer": "A", "risk": 0.1}, {"customer": "B", "risk": 0.9}],
                                     description="risk table")

    assert f() is not None


def ex_artifacts_progress():
    """'Create progress artifacts': create, then update by id."""
    from prefect.artifacts import create_progress_artifact, update_progress_artifact

    @task
    def fetch_in_batches():
        artifact_id = create_progress_artifact(progress=0.0, description="batches")
        for i in range(1, 4):
            update_progress_artifact(artifact_id=artifact_id, progress=i * 33.3)
        return artifact_id

    @flow
    def etl():
        return fetch_in_batches()

    assert etl() is not None
