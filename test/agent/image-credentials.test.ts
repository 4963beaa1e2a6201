import { credentialReference, expandImageCredentials, MissingCredentialVariableError } from '../../runtime/agent/image-credentials';

/** Which registry credential values name a variable, and what the agent makes of them. */
describe('registry credentials that name variables', () => {
  it('a whole $NAME or ${NAME} is a reference; anything else is a value as written', () => {
    expect(['$DOCKER_PASS', '${DOCKER_PASS}', '$_x1', '${_}'].map(credentialReference)).toEqual(['DOCKER_PASS', 'DOCKER_PASS', '_x1', '_']);
    // Plaintext passwords CircleCI would take as they are, `$` included.
    for (const literal of ['hunter2', 'pa$$word', '$1abc', 'x$DOCKER_PASS', '$DOCKER_PASS ', '${DOCKER_PASS', '${DOCKER-PASS}', '$', '$$', '']) expect(credentialReference(literal)).toBeUndefined();
  });

  it('expands auth and every aws_auth value, and leaves the rest of the image alone', () => {
    const image = { image: 'registry.corp/app:1', user: '$USER', environment: { A: '$B' }, auth: { username: 'bot', password: '$PASS' }, awsAuth: { oidc_role_arn: '${ROLE}' } };
    expect(expandImageCredentials(image, { PASS: 'p', ROLE: 'arn:aws:iam::1:role/r', B: 'never' })).toEqual({ ...image, auth: { username: 'bot', password: 'p' }, awsAuth: { oidc_role_arn: 'arn:aws:iam::1:role/r' } });
    expect(expandImageCredentials({ image: 'busybox' }, {})).toEqual({ image: 'busybox' });
  });

  it("a name the secrets lack, inherited names included, is refused naming it, the field and the image", () => {
    for (const name of ['MISSING', 'constructor', '__proto__', 'toString']) {
      let error: unknown;
      try {
        expandImageCredentials({ image: 'registry.corp/app:1', awsAuth: { aws_access_key_id: `$${name}` } }, { OTHER: 'x' });
      } catch (e) {
        error = e;
      }
      expect(error).toBeInstanceOf(MissingCredentialVariableError);
      expect((error as Error).message).toMatch(new RegExp(`^cannot pull registry\\.corp/app:1: aws_auth\\.aws_access_key_id is \\$${name}, and this job has no variable ${name}`));
    }
  });
});
