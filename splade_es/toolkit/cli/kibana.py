"""``splade-es kibana export``: saved objects that show an index's expansion terms."""

from __future__ import annotations

import click

from splade_es.errors import ConfigError
from splade_es.io.atomic import atomic_text_file
from splade_es.toolkit.cli.common import engine_options, friendly_errors, open_engine
from splade_es.toolkit.inspection.kibana import FLAVORS, saved_objects, to_ndjson
from splade_es.toolkit.query.searcher import IndexMeta


@click.group(short_help="Kibana / OpenSearch Dashboards saved objects.")
def kibana() -> None:
    """Kibana and OpenSearch Dashboards inspection of splade-es indices: saved objects that
    show, filter and chart each document's expansion terms.

    \b
    Examples:
      splade-es kibana export --index cran --url http://localhost:9200 -o cran.ndjson
      splade-es kibana export --index cran --flavor dashboards > cran.ndjson
    """


@kibana.command(short_help="Write importable saved objects (NDJSON) for an index.")
@click.option("--index", required=True, help="Index or alias written by 'splade-es ingest'.")
@click.option("--flavor", type=click.Choice(FLAVORS),
              help="Target product (default: dashboards for OpenSearch, kibana otherwise).")
@click.option("--output", "-o", type=click.Path(dir_okay=False, allow_dash=True), default="-", show_default=True,
              help="NDJSON file to write ('-' for standard output).")
@engine_options
@friendly_errors
def export(index: str, flavor: str | None, output: str, url, engine_kind, data_dir, api_key, username, password,
           ca_certs, insecure) -> None:
    """Write a data view, a saved search (title + expansion terms), charts of the most
    frequent expansion terms and a dashboard for INDEX, ready to import.

    The index is read first, so the objects name its real fields. Object ids are derived
    from the index name: importing again overwrites rather than duplicates.

    \b
    Import:
      Kibana 8:       Stack Management > Saved objects > Import, or
                      curl -X POST "$KIBANA/api/saved_objects/_import?overwrite=true" \\
                           -H 'kbn-xsrf: true' --form file=@cran.ndjson
      Dashboards 2:   Dashboards Management > Saved objects > Import, or
                      curl -X POST "$DASHBOARDS/api/saved_objects/_import?overwrite=true" \\
                           -H 'osd-xsrf: true' --form file=@cran.ndjson

    \b
    Examples:
      splade-es kibana export --index cran --url http://localhost:9200 -o cran.ndjson
      splade-es kibana export --index cran --flavor dashboards > cran.ndjson
    """
    engine = open_engine(url, engine_kind, data_dir, api_key, username, password, ca_certs, insecure)
    try:
        meta = IndexMeta.read(engine, index)
        if meta.terms_field not in meta.field_names:
            raise ConfigError(f"index {index!r} has no {meta.terms_field!r} keyword field to chart")
        chosen = flavor or ("dashboards" if engine.info.kind == "opensearch" else "kibana")
        text = to_ndjson(saved_objects(meta, chosen))
    finally:
        engine.close()
    if output == "-":
        click.echo(text, nl=False)
        return
    with atomic_text_file(output) as handle:
        handle.write(text)
    click.echo(f"wrote {text.count(chr(10))} {chosen} saved objects for {index} to {output}", err=True)
