from evitdeploy.cli import run

run()
