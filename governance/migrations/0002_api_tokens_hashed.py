"""API tokens move from DRF's authtoken table, which kept them in plain text, to knox's,
which keeps a digest: existing tokens keep working and their plain text is deleted."""

from django.db import migrations


def tokens_to_digests(apps, schema_editor):
    from knox.crypto import hash_token
    from knox.settings import CONSTANTS

    connection = schema_editor.connection
    if "authtoken_token" not in connection.introspection.table_names():
        return
    AuthToken = apps.get_model("knox", "AuthToken")
    with connection.cursor() as cursor:
        cursor.execute("SELECT key, user_id, created FROM authtoken_token")
        rows = cursor.fetchall()
        for key, user_id, created in rows:
            digest = hash_token(key)
            AuthToken(digest=digest, token_key=key[:CONSTANTS.TOKEN_KEY_LENGTH], user_id=user_id, expiry=None).save()
            AuthToken._default_manager.filter(digest=digest).update(created=created)
        cursor.execute("DELETE FROM authtoken_token")


class Migration(migrations.Migration):
    dependencies = [
        ("governance", "0001_initial"),
        ("knox", "0009_extend_authtoken_field"),
    ]

    operations = [migrations.RunPython(tokens_to_digests, migrations.RunPython.noop)]
