"""MetaSegNet Studio: UI-agnostic helpers behind ``app.py``.

``studio.session`` (per-user state), ``studio.mapview`` (offline Folium map with a click bridge),
the UI-agnostic services by concern (``studio.models``, ``studio.pair``, ``studio.scoring``, ``studio.labels``,
``studio.gsd``, ``studio.imagery``, ``studio.services`` for locating, ...; they call ``metaseg`` and
``prompts_db``),
``studio.views`` (escaped HTML snippets, display-size images), ``studio.tabs`` (the Gradio layer: one
module per tab, assembled by ``app.py``; the only part that imports gradio). Imports flow
``app.py`` → ``studio`` → ``prompts_db`` → ``metaseg``; nothing outside ``studio.tabs`` imports gradio.
"""
