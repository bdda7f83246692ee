"""DuckDB with its extensions loaded from a directory, never downloaded (the test
machine reaches no extension repository)."""

import duckdb


def connect(extension_dir, extensions=("httpfs", "avro", "iceberg")):
    con = duckdb.connect(
        config={
            "extension_directory": extension_dir,
            "autoinstall_known_extensions": False,
            "autoload_known_extensions": False,
        }
    )
    for extension in extensions:
        con.execute(f"LOAD {extension}")
    return con
