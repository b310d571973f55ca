"""The course's Jupyter server for students: installed in the environment (sys-prefix) by
scripts/lab-config.sh, so `make lab`, Binder and the hub's servers all read it.

Reading changes nothing. When a kernel starts, JupyterLab copies the kernel's
``language_info`` (Python's exact version, mimetype, lexer...) into the notebook's metadata,
marks it modified, and autosave writes it: a student who only read a chapter would find it
changed in `git status`, and the next `git pull` of the course would conflict. The hook below
saves ``language_info`` as the committed notebooks hold it, ``{"name": "python"}``; everything
else is saved as the student left it. (The exact version is not worth keeping: Debian's
python3.11 and pyenv's differ in their patch version, so any committed value would flip.)
"""


def keep_only_the_language_name(model, **kwargs):
    """ContentsManager pre-save hook: a notebook's language_info is saved with its name only."""
    if model.get("type") != "notebook" or not isinstance(model.get("content"), dict):
        return
    metadata = model["content"].get("metadata")
    info = metadata.get("language_info") if isinstance(metadata, dict) else None
    if isinstance(info, dict) and "name" in info:
        metadata["language_info"] = {"name": info["name"]}


c = get_config()  # noqa: F821 (defined by Jupyter's configuration loader)
c.ContentsManager.pre_save_hook = keep_only_the_language_name
